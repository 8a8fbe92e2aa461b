"""Two `voxbus manager` processes in one queue group; one is SIGKILLed mid-run."""

import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from tests.helpers import micro_instances, stop_processes
from voxbus.bus import connect
from voxbus.client import ModelClient
from voxbus.config import ClientConfig, Duration
from voxbus.errors import VoxbusError
from voxbus.subjects import Subjects

pytestmark = pytest.mark.models


def _served(stats: dict) -> int:
    return sum(e["num_requests"] for e in stats["endpoints"] if e["name"] == "tts-synthesize")


async def test_queue_group_spreads_load_and_survives_a_killed_manager(nats_server, tmp_path):
    cfg_file = tmp_path / "voxbus.yaml"
    cfg_file.write_text(yaml.safe_dump({"manager": {"cache_dir": str(tmp_path / "cache")}}))
    procs = {}
    for name in ("mgr-a", "mgr-b"):
        procs[name] = subprocess.Popen(
            [sys.executable, "-m", "voxbus", "manager", "--nats", nats_server.url, "--config", str(cfg_file),
             "--id", name, "--preload", "piper-joe"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    nc = await connect(nats_server.url, "test")
    service = Subjects().service_name()
    try:
        for proc in procs.values():
            while "loaded piper-joe" not in (line := await asyncio.to_thread(proc.stdout.readline)):
                assert line, "manager exited early"
        client = ModelClient(nc, Subjects(), ClientConfig(deadline=Duration(30), accept_timeout=Duration(1),
                                                          liveness_timeout=Duration(2), retries=5))
        await asyncio.gather(*(client.synthesize(f"Warm up number {i}.") for i in range(12)))
        stats = {s["metadata"]["manager"]: _served(s) for s in await micro_instances(nc, service)}
        assert set(stats) == {"mgr-a", "mgr-b"} and all(n > 0 for n in stats.values()), stats

        async def one(i):
            started = time.monotonic()
            try:
                pcm, _ = await client.synthesize(f"Request number {i} during a failure.")
                return "ok", time.monotonic() - started
            except VoxbusError as exc:  # typed, never anything else
                return type(exc).__name__, time.monotonic() - started

        tasks = [asyncio.create_task(one(i)) for i in range(16)]
        await asyncio.sleep(0.3)
        os.kill(procs["mgr-a"].pid, signal.SIGKILL)
        results = await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)  # never hangs
        assert all(elapsed < 30 + 1 for _, elapsed in results)
        assert sum(1 for r, _ in results if r == "ok") >= 12, results
        after = [await one(100 + i) for i in range(3)]
        assert all(r == "ok" for r, _ in after), after
        survivors = {s["metadata"]["manager"] for s in await micro_instances(nc, service)}
        assert survivors == {"mgr-b"}
    finally:
        await nc.close()
        stop_processes(procs.values())
