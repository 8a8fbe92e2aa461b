"""Bounded queues in arrival order, and no work for nobody: a full queue refuses at once, a
caller that goes away costs no inference, and a retried request runs once. Real server, real
manager and the bundled Gemma (one worker, so requests queue behind each other)."""

import asyncio
import time
import uuid

import pytest
import pytest_asyncio

from tests.helpers import embedded_config, make_config, running_manager
from voxbus.client import ModelClient
from voxbus.config import ClientConfig, Duration
from voxbus.errors import Overloaded
from voxbus.messages.headers import DEADLINE as DEADLINE_HEADER
from voxbus.messages.headers import QUEUE as QUEUE_HEADER
from voxbus.messages.headers import REQUEST_ID as REQUEST_ID_HEADER
from voxbus.messages.headers import STATUS as STATUS_HEADER
from voxbus.messages import GenerateChunk, GenerateDone, GenerateRequest, SamplingOptions, codec
from voxbus.server import NatsServer
from voxbus.subjects import Subjects

pytestmark = [pytest.mark.models, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("queueing")
    async with NatsServer(embedded_config(), store_dir=tmp / "js") as server:
        config = make_config(server.url, tmp / "cache", models={"gemma3-270m": {"max_queue": 3}})
        async with running_manager(config) as (bus, manager):
            models = ModelClient.from_bus(bus)
            await models.load("gemma3-270m")
            yield bus, manager, models


def request(tokens: int, text: str = "Once upon a time") -> bytes:
    return codec.encode(GenerateRequest(prompt=text, options=SamplingOptions(max_tokens=tokens, temperature=0.0)))


class RawCall:
    """A request published by hand, so the test sees every heartbeat and can walk away."""

    def __init__(self, bus, data: bytes, key: str | None = None, deadline: float | None = None) -> None:
        self.bus, self.data, self.key, self.deadline = bus, data, key or uuid.uuid4().hex, deadline
        self.messages: list = []
        self.sub = None

    async def send(self) -> "RawCall":
        inbox = self.bus.nc.new_inbox()

        async def on_msg(msg):
            self.messages.append((time.monotonic(), msg))

        self.sub = await self.bus.nc.subscribe(inbox, cb=on_msg)
        headers = {REQUEST_ID_HEADER: self.key}
        if self.deadline is not None:
            headers[DEADLINE_HEADER] = str(self.deadline)
        await self.bus.nc.publish(self.bus.subjects.model("llm", "generate"), self.data, reply=inbox, headers=headers)
        await self.bus.nc.flush()
        return self

    async def walk_away(self) -> None:
        await self.sub.unsubscribe()
        await self.bus.nc.flush()

    def statuses(self) -> list[tuple[str, str | None]]:
        return [((m.headers or {}).get(STATUS_HEADER), (m.headers or {}).get(QUEUE_HEADER)) for _, m in self.messages
                if (m.headers or {}).get(STATUS_HEADER)]

    async def done(self, timeout: float = 60) -> GenerateDone:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for _, m in self.messages:
                if b'"type":"done"' in m.data:
                    return codec.decode(m.data, GenerateDone)
            await asyncio.sleep(0.02)
        raise AssertionError(f"no answer: {self.statuses()}")


async def until(predicate, timeout: float = 30):
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out waiting"
        await asyncio.sleep(0.01)


def jobs(manager) -> int:
    return sum(w.jobs for w in manager.pool.slots["gemma3-270m"].workers)


async def test_a_full_queue_refuses_at_once_and_served_requests_keep_arrival_order(stack):
    bus, manager, models = stack
    slot = manager.pool.slots["gemma3-270m"]
    running = await RawCall(bus, request(400)).send()
    await until(lambda: slot.workers[0].state == "busy")
    queued = []
    for i in range(3):  # the limit (max_queue: 3)
        queued.append(await RawCall(bus, request(4, f"Story number {i}:")).send())
        await until(lambda: len(slot.waiting) == i + 1)
    started = time.monotonic()
    with pytest.raises(Overloaded) as info:
        await models.complete("One more", max_tokens=2)
    assert time.monotonic() - started < 0.5  # at once, not heartbeats forever
    assert info.value.transient and info.value.retry_after and info.value.retry_after > 0
    assert "3 requests waiting" in info.value.message

    answers = [await call.done() for call in [running, *queued]]
    finished = [next(t for t, m in call.messages if b'"type":"done"' in m.data) for call in [running, *queued]]
    assert finished == sorted(finished), "served in arrival order"
    assert all(a.finish_reason == "length" for a in answers)
    # Heartbeats said where each waiting request stood: the last one had two ahead of it.
    places = [int(q) for s, q in queued[2].statuses() if s == "working" and q is not None]
    assert places and places[0] == 2 and places == sorted(places, reverse=True), queued[2].statuses()


async def test_a_caller_that_goes_away_mid_queue_costs_no_inference(stack):
    bus, manager, models = stack
    slot = manager.pool.slots["gemma3-270m"]
    before = jobs(manager)
    running = await RawCall(bus, request(400)).send()  # seconds: longer than a heartbeat period
    await until(lambda: slot.workers[0].state == "busy")
    gone = await RawCall(bus, request(48, "Nobody will read this")).send()
    await until(lambda: len(slot.waiting) == 1)
    await gone.walk_away()
    await until(lambda: not slot.waiting, timeout=5)  # dropped at its next heartbeat, still queued
    assert slot.workers[0].state == "busy"  # the first one is still running: nothing skipped ahead
    await running.done()
    await asyncio.sleep(0.3)
    assert jobs(manager) == before + 1, "only the request whose caller stayed ran"


async def test_work_past_its_deadline_is_dropped_before_it_starts(stack):
    bus, manager, models = stack
    slot = manager.pool.slots["gemma3-270m"]
    before = jobs(manager)
    running = await RawCall(bus, request(400)).send()
    await until(lambda: slot.workers[0].state == "busy")
    late = await RawCall(bus, request(8, "Too late"), deadline=0.5).send()  # the caller waits half a second
    await until(lambda: any(b"timeout" in m.data for _, m in late.messages), timeout=5)
    assert slot.workers[0].state == "busy" and not slot.waiting
    error = next(m for _, m in late.messages if b"timeout" in m.data)
    assert error.headers["Nats-Service-Error-Code"] == "504"
    await running.done()
    await asyncio.sleep(0.3)
    assert jobs(manager) == before + 1, "the late request never ran"


async def test_a_retried_request_runs_once(stack):
    bus, manager, models = stack
    slot = manager.pool.slots["gemma3-270m"]
    before = jobs(manager)
    running = await RawCall(bus, request(400)).send()
    await until(lambda: slot.workers[0].state == "busy")
    # A caller whose first attempt got no answer in time retries on a new inbox, same request id.
    first = await RawCall(bus, request(6, "Retry me"), key="call-42").send()
    await until(lambda: len(slot.waiting) == 1)
    await first.walk_away()
    retry = await RawCall(bus, request(6, "Retry me"), key="call-42").send()
    answer = await retry.done()
    await running.done()
    assert answer.usage.completion_tokens == 6 and not any(b'"type":"done"' in m.data for _, m in first.messages)
    assert jobs(manager) == before + 2, "the retry joined the queued attempt instead of running again"

    # The same while the first attempt is already running and has streamed part of its answer: the
    # retry gets the whole answer, its first chunks sent again, and the model ran it once.
    first = await RawCall(bus, request(100, "Retry me too"), key="call-43").send()
    await until(lambda: any(b'"type":"chunk"' in m.data for _, m in first.messages))
    await first.walk_away()
    retry = await RawCall(bus, request(100, "Retry me too"), key="call-43").send()
    answer = await retry.done()
    chunks = [codec.decode(m.data, GenerateChunk) for _, m in retry.messages if b'"type":"chunk"' in m.data]
    assert [c.index for c in chunks] == list(range(len(chunks))) and "".join(c.text for c in chunks) == answer.text
    assert answer.usage.completion_tokens == 100 and jobs(manager) == before + 3


async def test_the_client_sends_one_request_id_for_all_attempts_of_a_call(stack):
    bus, _, _ = stack
    subjects = Subjects(prefix="flaky")  # nobody but the stand-in below serves this prefix
    seen: list[str] = []

    async def flaky(msg):  # ignores the first attempt (as a busy or lost manager would), answers the next
        seen.append(msg.headers[REQUEST_ID_HEADER])
        if len(seen) == 2:
            await bus.nc.publish(msg.reply, b'{"manager": "flaky", "models": []}')

    sub = await bus.nc.subscribe(subjects.model("admin", "list"), cb=flaky)
    try:
        reply = await ModelClient(bus.nc, subjects, ClientConfig(accept_timeout=Duration(0.3))).list_models()
    finally:
        await sub.unsubscribe()
    assert reply.manager == "flaky" and len(seen) == 2 and seen[0] == seen[1]
