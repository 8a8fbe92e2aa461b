"""Crash containment with the real models: every model runs in its own worker process, and a
worker killed by a signal (SIGKILL, SIGSEGV) or hung past the watchdog costs only the requests
running on it. The manager runs as `voxbus manager` in its own process, so a crash that took it
down would show: its pid must never change."""

import asyncio
import os
import signal
import subprocess
import sys
import time

import msgspec
import pytest
import pytest_asyncio
import yaml

from tests.helpers import embedded_config, make_config, run_voxbus, running_manager, until, until_busy, worker_pid
from voxbus.bus import connect
from voxbus.client import ModelClient
from voxbus.config import ClientConfig, Duration
from voxbus.errors import ModelCrashed, ModelFailed
from voxbus.history import stored
from voxbus.messages import GenerateChunk, ModelEvent, codec
from voxbus.server import NatsServer
from voxbus.subjects import Subjects

pytestmark = [pytest.mark.models, pytest.mark.asyncio(loop_scope="module")]

LONG = "Tell me a long story about a dragon who lived in the mountains and"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def deployment(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("workers")
    async with NatsServer(embedded_config(), store_dir=tmp / "js") as server:
        cfg = tmp / "voxbus.yaml"
        cfg.write_text(yaml.safe_dump({"manager": {"cache_dir": str(tmp / "cache")}}))
        proc = subprocess.Popen([sys.executable, "-m", "voxbus", "manager", "--nats", server.url, "--config", str(cfg),
                                 "--id", "crash-mgr", "--preload", "piper-joe", "--preload", "gemma3-270m"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            loaded = 0
            while loaded < 2:
                line = await asyncio.to_thread(proc.stdout.readline)
                assert line, "the manager exited early"
                loaded += line.startswith("loaded ")
            nc = await connect(server.url, "crash-test")
            try:
                yield server, proc, nc
            finally:
                await nc.close()
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()


def client(nc, **over) -> ModelClient:
    return ModelClient(nc, Subjects(), ClientConfig(deadline=Duration(120), **over))


async def manager_pid(nc) -> int:
    reply = await nc.request(Subjects.micro("INFO", Subjects().service_name()), b"", timeout=5)
    return int(msgspec.json.decode(reply.data)["metadata"]["pid"])


async def crash_events(nc, model: str) -> list[ModelEvent]:
    s = Subjects()
    events = [codec.decode(m.data, ModelEvent) async for m in stored(nc.jetstream(), s.stream("admin"), s.admin("model"))]
    return [e for e in events if e.model == model and e.event == "crashed"]


async def streaming(models: ModelClient, first_chunk: asyncio.Event):
    async for event in models.generate(LONG, max_tokens=400, temperature=0.0):
        if isinstance(event, GenerateChunk):
            first_chunk.set()
    return "finished"


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSEGV], ids=["SIGKILL", "SIGSEGV"])
async def test_a_worker_killed_mid_request_costs_that_request_only(deployment, sig):
    server, proc, nc = deployment
    models = client(nc)
    before_manager = await manager_pid(nc)
    assert before_manager == proc.pid
    victim = await worker_pid(models, "gemma3-270m")
    known = len(await crash_events(nc, "gemma3-270m"))
    first_chunk = asyncio.Event()
    doomed = asyncio.create_task(streaming(models, first_chunk))
    await asyncio.wait_for(first_chunk.wait(), 60)  # mid-answer: part of it was already delivered
    other = asyncio.create_task(models.synthesize("Meanwhile another model keeps speaking without noticing."))
    os.kill(victim, sig)
    killed = time.monotonic()
    with pytest.raises(ModelCrashed) as info:
        await doomed
    assert time.monotonic() - killed < 1.0, "the caller must hear of the crash within a second"
    assert info.value.transient and sig.name in info.value.message and str(victim) in info.value.message
    pcm, meta = await other  # the other model's concurrent request never noticed
    assert meta.model.id == "piper-joe" and len(pcm) > 0

    for _ in range(50):
        events = await crash_events(nc, "gemma3-270m")
        if len(events) > known:
            break
        await asyncio.sleep(0.1)
    crash = events[-1]
    assert crash.signal == sig.name and crash.pid == victim and crash.exit_code is None and crash.manager == "crash-mgr"
    if sig == signal.SIGSEGV:  # faulthandler's report is the last thing the worker wrote
        assert any("Segmentation fault" in line for line in crash.stderr), crash.stderr
    listed = {m.id: m for m in (await models.list_models()).models}["gemma3-270m"]
    assert listed.state == "crashed" and listed.crashes >= 1 and sig.name in listed.error

    done = await models.complete("The capital of France is", max_tokens=4, temperature=0.0)  # reloads it
    assert done.usage.completion_tokens == 4
    assert await worker_pid(models, "gemma3-270m") != victim
    assert await manager_pid(nc) == before_manager and proc.poll() is None


async def test_a_request_that_had_nothing_delivered_is_retried_once_on_a_fresh_worker(deployment):
    server, proc, nc = deployment
    models = client(nc)
    victim = await worker_pid(models, "piper-joe")
    text = " ".join(["This is a long announcement that keeps the voice busy for a while."] * 12)
    call = asyncio.create_task(models.synthesize(text))
    await until_busy(models, "piper-joe")  # it is being synthesized now
    os.kill(victim, signal.SIGKILL)
    pcm, meta = await asyncio.wait_for(call, 120)  # the model client's one retry, on a new worker
    assert meta.duration > 20 and len(pcm) > 0
    assert await worker_pid(models, "piper-joe") != victim

    # Without retries the caller sees the crash itself.
    bare = client(nc, retries=0)
    victim = await worker_pid(models, "piper-joe")
    call = asyncio.create_task(bare.synthesize(text))
    await until_busy(models, "piper-joe")
    os.kill(victim, signal.SIGKILL)
    with pytest.raises(ModelCrashed, match="SIGKILL"):
        await call


async def test_a_model_that_keeps_crashing_is_quarantined_until_loaded_again(deployment):
    server, proc, nc = deployment
    models = client(nc)
    speech, fmt = await models.synthesize("Is anybody listening to me?")
    await models.load("whisper-tiny-en")  # not crashed before in this deployment
    quarantined = None
    for n in range(1, 4):
        os.kill(await worker_pid(models, "whisper-tiny-en"), signal.SIGKILL)
        for _ in range(100):
            listed = {m.id: m for m in (await models.list_models()).models}["whisper-tiny-en"]
            if listed.state in ("crashed", "quarantined"):
                break
            await asyncio.sleep(0.05)
        if n < 3:
            assert listed.state == "crashed" and listed.crashes == n
            await models.transcribe(speech, fmt.format)  # the next request reloads it
        else:
            quarantined = listed
    assert quarantined.state == "quarantined" and quarantined.crashes == 3 and not quarantined.workers
    started = time.monotonic()
    with pytest.raises(ModelFailed) as info:
        await models.transcribe(speech, fmt.format)
    assert time.monotonic() - started < 1.0  # refused at once: no reload, no crash loop
    assert "quarantined after 3 crashes" in info.value.message
    assert "voxbus models load whisper-tiny-en" in info.value.message
    rc, out, err = await run_voxbus("models", "load", "whisper-tiny-en", "--nats", server.url)
    assert rc == 0 and "whisper-tiny-en: loaded" in out, err
    reply = await models.transcribe(speech, fmt.format)
    assert "listening" in reply.text.lower()
    assert await manager_pid(nc) == proc.pid


async def test_a_hung_worker_is_killed_by_the_watchdog(tmp_path):
    async with NatsServer(embedded_config(), store_dir=tmp_path / "js") as server:
        config = make_config(server.url, tmp_path / "cache", manager={"watchdog": "1s"})
        async with running_manager(config, expect_crashes=True) as (bus, manager):
            models = ModelClient.from_bus(bus)
            await models.load("gemma3-270m")
            worker = manager.pool.slots["gemma3-270m"].workers[0]
            first_chunk = asyncio.Event()
            doomed = asyncio.create_task(streaming(models, first_chunk))
            await asyncio.wait_for(first_chunk.wait(), 60)
            os.kill(worker.pid, signal.SIGSTOP)  # alive, but never answers again
            stopped = time.monotonic()
            with pytest.raises(ModelCrashed, match="hung: no progress for 1s"):
                await doomed
            assert 1.0 <= time.monotonic() - stopped < 3.0
            await manager.pool.loader.settle()
            (model, exit), = manager.pool.loader.crash_log
            assert model == "gemma3-270m" and exit.signal == "SIGKILL" and "watchdog" in exit.reason
            done = await models.complete("Hello", max_tokens=2, temperature=0.0)
            assert done.usage.completion_tokens == 2


async def test_an_unexpected_worker_crash_fails_the_test_that_saw_it(tmp_path):
    """The suite's own guard (tests/helpers.running_manager): a crash nobody injected is named."""
    async with NatsServer(embedded_config(), store_dir=tmp_path / "js") as server:
        config = make_config(server.url, tmp_path / "cache")
        with pytest.raises(pytest.fail.Exception, match=r"piper-joe: pid \d+ killed by SIGKILL"):
            async with running_manager(config) as (bus, manager):
                models = ModelClient.from_bus(bus)
                await models.load("piper-joe")
                os.kill(manager.pool.slots["piper-joe"].workers[0].pid, signal.SIGKILL)
                await until(lambda: manager.pool.loader.crash_log, what="the crash to be noticed")


async def test_ctrl_c_to_the_whole_process_group_stops_cleanly_and_keeps_state(tmp_path):
    """A terminal's Ctrl-C reaches the manager and its workers alike. The workers leave it to the
    manager, which stops them in order: the LLM's worker saves its conversation states first."""
    spill = tmp_path / "spill"
    async with NatsServer(embedded_config(), store_dir=tmp_path / "js") as server:
        cfg = tmp_path / "voxbus.yaml"
        cfg.write_text(yaml.safe_dump({"manager": {"cache_dir": str(tmp_path / "cache")},
                                       "cache": {"spill_dir": str(spill)}}))
        proc = subprocess.Popen([sys.executable, "-m", "voxbus", "manager", "--nats", server.url, "--config", str(cfg),
                                 "--preload", "gemma3-270m"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        nc = await connect(server.url, "ctrl-c")
        try:
            while not (line := await asyncio.to_thread(proc.stdout.readline)).startswith("loaded "):
                assert line, "the manager exited early"
            done = await client(nc).complete(messages=[{"role": "user", "content": "Hello!"}], conversation="kept",
                                             max_tokens=4, temperature=0.0)
            assert done.usage.completion_tokens > 0
            os.killpg(proc.pid, signal.SIGINT)
            out, err = await asyncio.to_thread(proc.communicate, timeout=60)
            s = Subjects()
            events = [codec.decode(m.data, ModelEvent)
                      async for m in stored(nc.jetstream(), s.stream("admin"), s.admin("model"))]
        finally:
            await nc.close()
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, err[-2000:]
        assert [(e.event, e.reason) for e in events if e.model == "gemma3-270m"][-1] == ("unloaded", "shutdown")
        assert list(spill.rglob("*.kv")), "the conversation's KV state was saved before the worker exited"
        assert "Traceback" not in err, err[-2000:]
