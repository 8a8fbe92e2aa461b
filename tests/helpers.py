"""Test helpers shared by the model tests."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

import jiwer
import msgspec
import pytest

from voxbus.bus import Bus, open_bus
from voxbus.client import ModelClient
from voxbus.config import Config, EmbeddedServerConfig, load_config
from voxbus.config.loader import deep_merge
from voxbus.history import stored
from voxbus.messages import AudioFrame, SessionError, SessionTranscribed, Transcript, codec
from voxbus.manager import ModelManager
from voxbus.subjects import Subjects


def embedded_config() -> EmbeddedServerConfig:
    """A test server: random client and monitoring ports."""
    return EmbeddedServerConfig(port=0, monitor_port=0)


def make_config(url: str, cache_dir: Path, **overrides: Any) -> Config:
    """The default config on the test's server, caches under a temp dir, plus overrides."""
    over = deep_merge({"nats": {"url": url}, "manager": {"cache_dir": str(cache_dir)}}, overrides)
    return load_config(env={}, overrides=over)


@asynccontextmanager
async def running_manager(config: Config, manager_id: str = "test-manager", *,
                          expect_crashes: bool | set[int] = False) -> AsyncIterator[tuple[Bus, ModelManager]]:
    """A ModelManager in this process. A model worker that crashes while it runs fails the test
    loudly, naming the model, how the worker died and its last stderr lines, unless the test
    injects crashes itself: `expect_crashes=True`, or a set the test fills with the pids it kills
    (any other crash still fails)."""
    async with open_bus(config, name=manager_id) as bus:
        async with ModelManager(bus, manager_id=manager_id) as manager:
            yield bus, manager
            await manager.pool.loader.settle()
            crashes = list(manager.pool.loader.crash_log)
    if isinstance(expect_crashes, set):
        crashes = [(model, e) for model, e in crashes if e.pid not in expect_crashes]
    if crashes and expect_crashes is not True:
        pytest.fail("model worker crashed during the test: " + "; ".join(
            f"{model}: pid {e.pid} {e.reason}; stderr: {' | '.join(e.stderr[-8:]) or '(none)'}" for model, e in crashes),
            pytrace=False)


async def until(predicate, timeout: float = 30.0, what: str = "the condition", poll: float = 0.02) -> None:
    """Wait for a condition (not a fixed sleep): fails the test, saying what, after `timeout`."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}", pytrace=False)
        await asyncio.sleep(poll)


async def delivered(bus: Bus, manager: ModelManager | None = None) -> None:
    """Every event the manager has published so far has reached this connection's subscriptions
    (its background publishing is done, and a server round trip delivered what was in flight)."""
    if manager is not None:
        await manager.pool.loader.settle()
    await bus.nc.flush()
    for _ in range(3):  # let the subscription callbacks run
        await asyncio.sleep(0)


# Word error rate through jiwer: case and punctuation do not count ("Farm-house." = "farm house").
_WORDS = jiwer.Compose([jiwer.ToLowerCase(), jiwer.SubstituteRegexes({r"[^a-z0-9' ]+": " "}),
                        jiwer.RemoveMultipleSpaces(), jiwer.Strip(), jiwer.ReduceToListOfListOfWords()])


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate of one hypothesis (an empty one is 1.0)."""
    if not hypothesis.strip() or not any(c.isalnum() for c in hypothesis):
        return 1.0
    return jiwer.wer(reference, hypothesis, reference_transform=_WORDS, hypothesis_transform=_WORDS)


def to_builtins(obj: Any) -> Any:
    return msgspec.to_builtins(obj)


async def run_voxbus(*args: str, timeout: float = 300) -> tuple[int, str, str]:
    """Run the `voxbus` command as a user would, in a child process: (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "voxbus", *args,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode, out.decode(), err.decode()


async def worker_pid(models: ModelClient, model: str) -> int:
    for _ in range(200):
        info = {m.id: m for m in (await models.list_models()).models}[model]
        if info.state == "loaded" and info.workers:
            return info.workers[0].pid
        await asyncio.sleep(0.05)
    raise AssertionError(f"{model} never came back: {info}")


async def until_busy(models: ModelClient, model: str) -> None:
    for _ in range(500):
        info = {m.id: m for m in (await models.list_models()).models}[model]
        if any(w.state == "busy" for w in info.workers):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{model} never got busy")


async def until_sessions_stream(bus, sessions, timeout: float = 60.0) -> None:
    """Until a frame of each session is stored: a fault must hit sessions under way, not
    publisher processes still starting (on a slow machine that takes seconds)."""
    s = bus.subjects
    for _ in range(int(timeout / 0.1)):
        for sid in sessions:
            try:
                await bus.js.get_last_msg(s.stream("audio"), s.audio_in(sid))
            except Exception:
                break
        else:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"no frame of every session {list(sessions)} within {timeout:g}s")


async def assert_sessions_complete(bus, sessions, spoken: str, max_wer: float = 0.15) -> None:
    """Nothing lost or doubled: every frame of each session stored once and in order, one
    `transcribed` naming the last frame, no error event, utterances numbered without a gap, and
    the transcripts saying what was spoken."""
    s = bus.subjects
    for sid in sessions:
        seqs = [codec.decode_meta(m.headers, AudioFrame).seq async for m in stored(bus.js, s.stream("audio"), s.audio_in(sid))]
        assert sorted(seqs) == list(range(len(seqs))) and len(seqs) > 300, (sid, len(seqs))
        done = [m async for m in stored(bus.js, s.stream("ctl"), s.control(sid, "transcribed"))]
        errors = [codec.decode(m.data, SessionError) async for m in stored(bus.js, s.stream("ctl"), s.control(sid, "error"))]
        texts = [codec.decode(m.data, Transcript) async for m in stored(bus.js, s.stream("text"), s.transcript(sid))]
        assert len(done) == 1 and codec.decode(done[0].data, SessionTranscribed).last_seq == len(seqs) - 1, sid
        assert not errors, (sid, errors)
        assert [t.utterance for t in texts] == list(range(len(texts))), sid
        assert wer(spoken, " ".join(t.text for t in texts)) <= max_wer, (sid, [t.text for t in texts])


def stop_processes(procs, timeout: float = 30.0) -> None:
    """SIGTERM every child still running, wait for each, SIGKILL one that does not exit in time."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()


async def micro_instances(nc, service: str, timeout: float = 0.5) -> list[dict]:
    """Every instance's $SRV.STATS answer (a plain request would return only the first)."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    await nc.publish(Subjects.micro("STATS", service), b"", reply=inbox)
    found = []
    end = time.monotonic() + timeout
    while (left := end - time.monotonic()) > 0:
        try:
            found.append(msgspec.json.decode((await sub.next_msg(timeout=left)).data))
        except Exception:
            break
    await sub.unsubscribe()
    return found
