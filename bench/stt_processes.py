"""STT services under test in processes of their own, for `bench/ingest.py --stt-processes K`.

Each child runs the real SttService with the stub models (as ingest.py does in-process) and,
every 100 ms, sends this process its counters and the lag samples it recorded since (time from
a frame's `ts` to the service taking it, with time.monotonic(), which is one clock for every
process on Linux). RemoteStts sums them and stands in for one in-process service in ingest.py's
step(): `.stats` (frames, sessions_done, utterances, lag_s) and `.on_stage` (VAD passes), and
its CPU is read from /proc. With K = 1 the child runs the default, unpartitioned service; with
more, every child runs `stt.partitions: P` and they share the partitions.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing as mp
import os
import threading
import time
from types import SimpleNamespace

from benchkit import LagLog, StubModels, bench_config, proc_cpu_s, wait_for

PUSH_EVERY_S = 0.1


def _child(url: str, prefix: str, partitions: int, conn) -> None:
    logging.basicConfig(level=logging.WARNING)
    try:
        asyncio.run(_serve(url, prefix, partitions, conn))
    except Exception as exc:
        conn.send({"error": repr(exc)})


async def _serve(url: str, prefix: str, partitions: int, conn) -> None:
    from voxbus.bus import open_bus
    from voxbus.stt import SttService

    passes = SimpleNamespace(batches=0, batch_sessions=0, detect_s=0.0)

    def on_stage(stage: str, session, **t) -> None:
        if stage == "detect":
            passes.batches += 1
            passes.batch_sessions += t["sessions"]
            passes.detect_s += t["seconds"]

    cfg = bench_config(url, prefix=prefix, stt={"partitions": partitions})
    async with open_bus(cfg, f"bench-ingest-stt-{os.getpid()}") as bus:
        stt = SttService(bus, models=StubModels(), on_stage=on_stage)
        samples = stt.stats.lag_s = LagLog()
        async with stt:
            while not conn.poll():
                await asyncio.sleep(PUSH_EVERY_S)
                t, lag = samples.take()
                st = stt.stats
                conn.send({"frames": st.frames, "sessions_done": st.sessions_done, "utterances": st.utterances,
                           "batches": passes.batches, "batch_sessions": passes.batch_sessions,
                           "detect_s": passes.detect_s, "loop_cpu": time.thread_time(), "t": t, "lag": lag,
                           "partitions": len(stt.partitions.bound) if stt.partitions is not None else 1})


class RemoteStts:
    """K STT processes, summed into what ingest.py's step() reads of one in-process service."""

    def __init__(self, url: str, prefix: str, k: int, partitions: int) -> None:
        self.url, self.prefix, self.k = url, prefix, k
        self.partitions = partitions if k > 1 else 1
        self.stats = SimpleNamespace(frames=0, sessions_done=0, utterances=0, lag_s=LagLog())
        self.on_stage = SimpleNamespace(batches=0, batch_sessions=0, detect_s=0.0)
        self._latest: list[dict] = [{} for _ in range(k)]
        self._procs: list = []
        self._conns: list = []
        self._readers: list[threading.Thread] = []
        self.error: str | None = None

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs]

    async def __aenter__(self) -> "RemoteStts":
        ctx = mp.get_context("spawn")
        for i in range(self.k):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_child, args=(self.url, self.prefix, self.partitions, child), daemon=True)
            proc.start()
            self._procs.append(proc)
            self._conns.append(parent)
            reader = threading.Thread(target=self._read, args=(i, parent), daemon=True)
            reader.start()
            self._readers.append(reader)
        shared = await wait_for(lambda: self.error is not None or (
            all(x.get("partitions") for x in self._latest)
            and sum(x["partitions"] for x in self._latest) == self.partitions), 120, poll=0.1)
        if self.error is not None or not shared:
            raise RuntimeError(f"the STT processes did not start sharing the partitions: {self.error or self._latest}")
        return self

    def _read(self, i: int, conn) -> None:
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                return
            if "error" in msg:
                self.error = msg["error"]
                return
            for t, lag in zip(msg.pop("t"), msg.pop("lag")):
                self.stats.lag_s.t.append(t)
                self.stats.lag_s.lag.append(lag)
            self._latest[i] = msg
            for key in ("frames", "sessions_done", "utterances"):
                setattr(self.stats, key, sum(x.get(key, 0) for x in self._latest))
            for key in ("batches", "batch_sessions", "detect_s"):
                setattr(self.on_stage, key, sum(x.get(key, 0) for x in self._latest))

    def cpu(self) -> tuple[float, float]:
        """CPU seconds of the STT processes, and of their event-loop threads (as they last said)."""
        return (sum(proc_cpu_s(pid) for pid in self.pids),
                sum(x.get("loop_cpu", 0.0) for x in self._latest))

    async def __aexit__(self, *exc) -> None:
        for conn in self._conns:
            try:
                conn.send("stop")
            except OSError:
                pass
        for proc in self._procs:
            await asyncio.to_thread(proc.join, 30)
            if proc.is_alive():
                proc.kill()
