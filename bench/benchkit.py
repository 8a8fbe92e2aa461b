"""What the benchmark scripts share: percentiles, the machine's CPU and how busy others keep it, a
stubbed model client, a helper process with a result pipe, and temporary directories that go.

Scripts run as `.venv/bin/python bench/<name>.py`, so this module is importable as `benchkit`.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import os
import shutil
import tempfile
import time
from pathlib import Path
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import numpy as np

from voxbus.config import EmbeddedServerConfig, load_config
from voxbus.messages.model import TranscribeReply
from voxbus.messages.text import ModelRef
from voxbus.server import NatsServer

BUSY_LIMIT = 0.3
"""Cores used by other processes above which a measurement is taken as disturbed."""


def pct(values, q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else float("nan")


def summary(values, unit: str = "ms") -> str:
    if not len(values):
        return "no samples"
    return (f"p50 {pct(values, 50):.3f} {unit}, p95 {pct(values, 95):.3f}, p99 {pct(values, 99):.3f}, "
            f"max {max(values):.3f}  (n={len(values)})")


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def bench_config(url: str, cache_dir: Path | None = None, prefix: str = "vox", **overrides):
    """The default configuration on the benchmark's server (no user file, no environment)."""
    over: dict = {"nats": {"url": url, "prefix": prefix}}
    if cache_dir is not None:
        over["manager"] = {"cache_dir": str(cache_dir)}
    for key, value in overrides.items():
        over.setdefault(key, {}).update(value)
    return load_config(env={}, overrides=over)


@contextlib.contextmanager
def temp_dir(prefix: str) -> Iterator[Path]:
    """A scratch directory (a JetStream store, caches) removed when the benchmark ends."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.asynccontextmanager
async def bench_server(prefix: str) -> AsyncIterator[tuple[NatsServer, Path]]:
    """A private nats-server on a free port with its store in a scratch directory; both go when
    the benchmark ends, however it ends."""
    with temp_dir(prefix) as tmp:
        emb = EmbeddedServerConfig(port=0, monitor_port=0, store_dir=str(tmp / "js"))
        async with NatsServer(emb) as server:
            yield server, tmp


# -- how busy the machine is -------------------------------------------------------------------
def machine_cpu() -> tuple[int, int]:
    """(total, idle) jiffies of the whole machine, from /proc/stat."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(f), f[3] + f[4]


def cores_busy_between(before: tuple[int, int], after: tuple[int, int]) -> float:
    """CPU cores busy machine-wide between two machine_cpu() readings."""
    (t0, i0), (t1, i1) = before, after
    return (os.cpu_count() or 1) * (1 - (i1 - i0) / max(t1 - t0, 1))


def busy_cores(seconds: float = 1.0) -> float:
    """CPU cores busy machine-wide over `seconds`."""
    before = machine_cpu()
    time.sleep(seconds)
    return cores_busy_between(before, machine_cpu())


def proc_cpu_s(pid: int | None) -> float:
    """utime + stime of a process (all its threads), seconds; 0 for one that is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, TypeError):
        return 0.0


def own_cpu_s(pids: list[int] = ()) -> float:
    """CPU seconds of this process, its children (model workers) and the given processes."""
    import psutil

    me = psutil.Process()
    total = time.process_time() + sum(proc_cpu_s(p) for p in pids)
    for child in me.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            t = child.cpu_times()
            total += t.user + t.system
    return total


async def wait_quiet(limit_s: float, say: Callable[[str], None] = print) -> float:
    """On a shared machine: wait (up to limit_s) until other processes leave the CPU idle."""
    end = time.monotonic() + limit_s
    while True:
        busy = await asyncio.to_thread(busy_cores, 1.0)
        if busy <= BUSY_LIMIT or time.monotonic() >= end:
            if busy > BUSY_LIMIT:
                say(f"WARNING: other processes are using {busy:.2f} cores; measuring anyway")
            return busy
        say(f"(machine busy: {busy:.2f} cores used by others; waiting)")


class CpuWatch:
    """``with CpuWatch(pids) as w: ...; w.others`` = cores used meanwhile by processes that are not
    ours (this one, its children such as the model workers, and `pids`, e.g. nats-server)."""

    def __init__(self, pids: list[int] = (), extra_cpu: Callable[[], float] = lambda: 0.0) -> None:
        self.pids, self.extra = [p for p in pids if p], extra_cpu

    def __enter__(self) -> "CpuWatch":
        self.t, self.m, self.own = time.monotonic(), machine_cpu(), own_cpu_s(self.pids)
        return self

    def __exit__(self, *exc) -> None:
        wall = max(time.monotonic() - self.t, 1e-6)
        busy = cores_busy_between(self.m, machine_cpu())
        own = own_cpu_s(self.pids) - self.own + self.extra()
        self.others = max(busy - own / wall, 0.0)

    @property
    def percent(self) -> float:
        """The same as a share of the whole machine."""
        return 100 * self.others / (os.cpu_count() or 1)

    def note(self) -> str:
        return (f"other processes used {self.others:.2f} cores meanwhile"
                + ("  WARNING: machine not idle, numbers inflated" if self.others > BUSY_LIMIT else ""))


async def wait_for(cond: Callable[[], bool], timeout: float, poll: float = 0.02) -> bool:
    """Whether `cond()` came true within `timeout` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        await asyncio.sleep(poll)
    return cond()


# -- stand-ins and helper processes ---------------------------------------------------------------
class LagLog:
    """Stands in for an STT service's stats.lag_s (a bounded deque there): keeps every sample with
    its time (time.monotonic(), one clock for every process on Linux)."""

    def __init__(self) -> None:
        self.t: list[float] = []
        self.lag: list[float] = []

    def append(self, lag: float) -> None:
        self.t.append(time.monotonic())
        self.lag.append(lag)

    def __len__(self) -> int:
        return len(self.lag)

    def __iter__(self):
        return iter(self.lag)

    def take(self) -> tuple[list[float], list[float]]:
        """The samples so far (times, lags), and start a new batch."""
        t, lag, self.t, self.lag = self.t, self.lag, [], []
        return t, lag


class StubModels:
    """INFERENCE STUBBED OUT: every transcribe request is answered at once (for measuring the bus
    and the STT service alone)."""

    def __init__(self) -> None:
        self.requests = 0

    async def transcribe(self, pcm, format, *, model=None, language=None, session=None, **kw) -> TranscribeReply:
        self.requests += 1
        return TranscribeReply(model=ModelRef(id="stub", backend="stub"), text="stub", language="en",
                               duration=len(pcm) / format.frame_bytes / format.rate)


def _receive(conn, proc, timeout: float) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if conn.poll(0.2):
            return conn.recv()
        if not proc.is_alive() and not conn.poll(0.2):
            return {"error": f"the helper process exited with code {proc.exitcode} without a result"}
    return {"error": f"no result from the helper process within {timeout:.0f} s"}


async def in_process(target: Callable[..., Any], args: tuple, timeout: float) -> dict:
    """Run `target(*args, conn)` in a fresh process (spawned: it must not share this event loop)
    and return the dict it sends on `conn`; an error, never a hang, if it dies or stalls."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=target, args=(*args, child), daemon=True)
    proc.start()
    try:
        result = await asyncio.to_thread(_receive, parent, proc, timeout)
    finally:
        await asyncio.to_thread(proc.join, 30)
        if proc.is_alive():
            proc.kill()
    if "error" in result:
        raise RuntimeError(f"helper process failed: {result['error']}")
    return result
