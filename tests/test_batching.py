"""Cross-session batching of transcribe requests: the batcher's policy with a fake backend, then
the real manager with the bundled whisper and piper models on a real server."""

import asyncio
import time

import numpy as np
import pytest
import pytest_asyncio

from voxbus.client import ModelClient
from voxbus.config import load_config
from voxbus.errors import BadRequest, InvalidAudio, ModelBusy
from voxbus.manager import worker_protocol as wp
from voxbus.manager.batcher import TranscribeBatcher
from voxbus.manager.crashes import CrashHistory
from voxbus.manager.slot import ModelSlot
from voxbus.manager.worker import WorkerFailed
from voxbus.messages import AudioFormat
from voxbus.server import NatsServer
from tests.helpers import embedded_config, make_config, running_manager, wer

SENTENCES = [  # ten words or more: one misheard word stays within the 10 % bound
    "Please turn on the lights in the kitchen and in the hallway.",
    "Tomorrow morning we are driving to the mountains with our friends.",
    "My favorite color is green, but my sister prefers bright yellow.",
    "Play some relaxing music in the living room after dinner tonight.",
    "The children are playing in the garden with their new puppy.",
    "We need to buy bread, eggs and apples before the shop closes.",
    "Remind me to call my mother tonight when I get home.",
    "Please remember to water the tomatoes in the garden every evening.",
]
PCM16K = AudioFormat(rate=16000, channels=1, sample="s16le")


# -- the batcher alone ---------------------------------------------------------------------------
class FakeWorker:
    """Stands in for a model's worker process (pure policy test): echoes each row's first sample;
    a row starting with 7.0 breaks the whole batch call."""

    def __init__(self, index: int = 0) -> None:
        self.index = index
        self.state = "idle"
        self.alive = True
        self.calls: list[int] = []

    @property
    def free(self) -> bool:
        return self.state == "idle"

    async def run(self, job, on_text=None):
        self.state = "busy"
        try:
            rows = [np.frombuffer(a, dtype=np.float32) for a in job.audios]
            self.calls.append(len(rows))
            await asyncio.sleep(0.05)
            if any(r[0] == 7.0 for r in rows):
                raise WorkerFailed(wp.Failed(job=job.job, kind="bad_input", message="row 7 is poison"))
            return wp.Result(job=job.job, infer_ms=50.0, transcripts=[
                wp.Transcript(segments=[wp.Segment(0, 1, f"row {r[0]:g}")], language="en", duration=len(r) / 16000)
                for r in rows])
        finally:
            self.state = "idle"


class FakePool:
    def started(self, slot, ctxs):
        return lambda: None


@pytest_asyncio.fixture
async def fake_slot():
    config = load_config(env={})
    slot = ModelSlot("fake", config.models["whisper-tiny-en"], "cpu", None, max_queue=64,
                     crashes=CrashHistory(3, 600))
    slot.info = wp.Loaded(pid=0, sample_rate=16000, batch_max_seconds=30)
    slot.fake = FakeWorker()
    slot.queue.set_workers([slot.fake])
    slot.state = "loaded"
    yield slot


def batching(**over):
    return load_config(env={}, overrides={"batching": over}).batching


def batcher_for(slot, **over):
    return TranscribeBatcher(slot, FakePool(), batching(**over))


async def test_a_full_batch_starts_at_once_and_the_overflow_forms_the_next(fake_slot):
    batcher = batcher_for(fake_slot, max_batch=4, max_wait_ms=1000, quiet_ms=1000)
    started = time.monotonic()
    outs = await asyncio.gather(*(batcher.submit(np.full(1600, float(i), np.float32), None, {}) for i in range(6)))
    assert [o.result.segments[0].text for o in outs] == [f"row {i}" for i in range(6)]
    assert [o.batch_size for o in outs] == [4, 4, 4, 4, 2, 2] and fake_slot.fake.calls == [4, 2]
    # The first four did not wait; the last two waited out max_wait_ms for company, then went.
    assert outs[0].queue_ms < 500 and 1.0 <= time.monotonic() - started < 1.5


async def test_a_lone_request_waits_at_most_max_wait(fake_slot):
    batcher = batcher_for(fake_slot, max_wait_ms=30, quiet_ms=1000)
    started = time.monotonic()
    out = await batcher.submit(np.ones(1600, np.float32), None, {})
    assert out.batch_size == 1 and 0.03 <= out.queue_ms / 1000 and time.monotonic() - started < 0.5


async def test_a_quiet_gap_starts_the_batch_before_max_wait(fake_slot):
    batcher = batcher_for(fake_slot, max_batch=8, max_wait_ms=1000, quiet_ms=20)
    started = time.monotonic()
    outs = await asyncio.gather(*(batcher.submit(np.ones(1600, np.float32), None, {}) for _ in range(3)))
    assert [o.batch_size for o in outs] == [3, 3, 3] and 0.02 <= outs[0].queue_ms / 1000
    assert time.monotonic() - started < 0.5


async def test_a_batch_that_fails_is_rerun_one_by_one_so_only_the_culprit_fails(fake_slot):
    batcher = batcher_for(fake_slot, max_batch=8, max_wait_ms=50)
    outs = await asyncio.gather(*(batcher.submit(np.full(1600, float(i), np.float32), None, {}) for i in (5, 6, 7, 8)),
                                return_exceptions=True)
    assert isinstance(outs[2], BadRequest) and "poison" in outs[2].message
    assert [o.result.segments[0].text for o in (outs[0], outs[1], outs[3])] == ["row 5", "row 6", "row 8"]
    assert sorted(fake_slot.fake.calls) == [1, 1, 1, 1, 4] and fake_slot.fake.calls[0] == 4


async def test_two_workers_each_take_a_batch_while_the_next_one_gathers(fake_slot):
    second = FakeWorker(1)
    fake_slot.queue.set_workers([fake_slot.fake, second])
    batcher = batcher_for(fake_slot, max_batch=2, max_wait_ms=1000, quiet_ms=1000)
    outs = await asyncio.gather(*(batcher.submit(np.full(1600, float(i), np.float32), None, {}) for i in range(4)))
    assert [o.batch_size for o in outs] == [2, 2, 2, 2]
    assert fake_slot.fake.calls == [2] and second.calls == [2]  # the two batches ran side by side


async def test_requests_that_decode_differently_are_not_mixed(fake_slot):
    batcher = batcher_for(fake_slot, max_batch=8, max_wait_ms=50)
    audio = np.ones(1600, np.float32)
    outs = await asyncio.gather(batcher.submit(audio, "en", {}), batcher.submit(audio, "de", {}),
                                batcher.submit(audio, "en", {"beam_size": 2}), batcher.submit(audio, "en", {}))
    assert [o.batch_size for o in outs] == [2, 1, 1, 2]


async def test_interim_requests_wait_behind_every_final(fake_slot):
    """Partials never take the worker from a final: while one batch runs, finals and partials
    queue; the finals' batch forms first even though the partials came first."""
    batcher = batcher_for(fake_slot, max_batch=4, max_wait_ms=1, quiet_ms=1)
    order: list[str] = []

    async def ask(value: float, interim: bool) -> None:
        out = await batcher.submit(np.full(1600, value, np.float32), None, {}, interim=interim)
        order.append(out.result.segments[0].text)

    first = asyncio.create_task(ask(0.0, False))  # holds the only worker for 50 ms
    await asyncio.sleep(0.01)
    rest = [asyncio.create_task(ask(float(i), True)) for i in (1, 2)] + [asyncio.create_task(ask(3.0, False))]
    await asyncio.gather(first, *rest)
    assert order[0] == "row 0" and order[1] == "row 3", order
    assert fake_slot.fake.calls == [1, 1, 2]  # the final alone, then both partials together


async def test_bad_audio_is_refused_before_it_joins_a_batch(fake_slot):
    batcher = batcher_for(fake_slot)
    for bad in (np.zeros(0, np.float32), np.full(100, np.nan, np.float32)):
        with pytest.raises(InvalidAudio):
            await batcher.submit(bad, None, {})
    assert fake_slot.fake.calls == []


# -- the manager with the real models ------------------------------------------------------------
@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("batching")
    async with NatsServer(embedded_config(), store_dir=tmp / "js") as server:
        # A generous wait: on a loaded 2-core machine a burst's requests arrive spread out.
        config = make_config(server.url, tmp / "cache", batching={"max_wait_ms": 300})
        async with running_manager(config) as (bus, manager):
            client = ModelClient.from_bus(bus)
            speech = [(await client.synthesize(s, format=PCM16K))[0] for s in SENTENCES]
            yield server, manager, client, speech


@pytest.mark.models
@pytest.mark.asyncio(loop_scope="module")
async def test_concurrent_sessions_are_batched_and_each_gets_its_own_text(stack):
    _, manager, client, speech = stack
    slot = manager.pool.slots["whisper-tiny-en"]
    burst = [asyncio.create_task(client.transcribe(pcm, PCM16K, session=f"session-{i}"))
             for i, pcm in enumerate(speech)]
    for _ in range(200):  # the burst holds the model while it waits in the batcher
        if slot.inflight:
            break
        await asyncio.sleep(0.01)
    with pytest.raises(ModelBusy):
        await manager.pool.unload(slot)
    replies = await asyncio.gather(*burst)
    assert max(r.batch_size for r in replies) > 1, [r.batch_size for r in replies]
    for sentence, reply in zip(SENTENCES, replies):
        assert wer(sentence, reply.text) <= 0.1, (sentence, reply.text)
        assert reply.segments and reply.segments[-1].end <= reply.duration + 0.5
    assert slot.inflight == 0 and slot.loaded


@pytest.mark.models
@pytest.mark.asyncio(loop_scope="module")
async def test_a_malformed_request_in_a_burst_fails_alone(stack):
    _, _, client, speech = stack
    nan = np.full(800, np.nan, dtype="<f4").tobytes()
    calls = [client.transcribe(pcm, PCM16K) for pcm in speech[:4]]
    calls.insert(2, client.transcribe(nan, AudioFormat(sample="f32le")))
    calls.insert(4, client.transcribe(b"\x00\x01\x02", PCM16K))
    out = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(out[2], InvalidAudio) and isinstance(out[4], InvalidAudio)
    good = [r for i, r in enumerate(out) if i not in (2, 4)]
    assert max(r.batch_size for r in good) > 1
    for sentence, reply in zip(SENTENCES[:4], good):
        assert wer(sentence, reply.text) <= 0.1, (sentence, reply.text)


@pytest.mark.models
@pytest.mark.asyncio(loop_scope="module")
async def test_audio_longer_than_a_window_takes_the_one_by_one_path(stack):
    _, _, client, speech = stack
    silence = b"\x00\x00" * 16000 * 2
    long = b"".join([speech[0], silence] * 8)[: 2 * 16000 * 31]
    long += b"\x00\x00" * max(0, 16000 * 31 - len(long) // 2)  # 31 s: past Whisper's 30 s window
    replies = await asyncio.gather(client.transcribe(long, PCM16K), *(client.transcribe(p, PCM16K) for p in speech[:3]))
    assert replies[0].batch_size == 1 and replies[0].duration == pytest.approx(31, abs=0.01)
    assert "kitchen" in replies[0].text.lower()
    assert max(r.batch_size for r in replies[1:]) >= 2  # the short ones still batch (a 5 ms gap may split them)


@pytest.mark.models
@pytest.mark.asyncio(loop_scope="module")
async def test_batching_disabled_gives_batch_size_1(stack, tmp_path):
    server, _, _, speech = stack
    config = make_config(server.url, tmp_path / "cache", nats={"prefix": "nobatch"}, batching={"enabled": False})
    async with running_manager(config, manager_id="no-batching") as (bus, _):
        client = ModelClient.from_bus(bus)
        replies = await asyncio.gather(*(client.transcribe(pcm, PCM16K) for pcm in speech[:3]))
    assert [r.batch_size for r in replies] == [1, 1, 1]
    for sentence, reply in zip(SENTENCES, replies):
        assert wer(sentence, reply.text) <= 0.1, (sentence, reply.text)
