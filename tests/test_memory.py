"""Memory you can trust: a model's footprint is its own worker's RSS, unloading gives it back to
the operating system, and the manager process never holds a model library at all."""

import asyncio
import subprocess
import sys
import textwrap

import psutil
import pytest

from tests.helpers import make_config, running_manager
from voxbus.client import ModelClient

pytestmark = pytest.mark.models

MODEL_LIBRARIES = ("llama_cpp", "faster_whisper", "piper", "TTS", "ctranslate2", "torch", "onnxruntime")


async def test_footprint_is_the_workers_rss_and_unloading_returns_it(nats_server, tmp_path):
    config = make_config(nats_server.url, tmp_path / "cache")
    me = psutil.Process()
    async with running_manager(config) as (bus, manager):
        models = ModelClient.from_bus(bus)
        slot = manager.pool.slots["piper-joe"]
        readings = []
        for cycle in range(10):
            await models.synthesize("Load, speak, unload.")
            worker = slot.workers[0]
            rss = psutil.Process(worker.pid).memory_info().rss
            # Admission's figure is that worker's own peak RSS, not a delta of this process.
            assert slot.ram == worker.peak_rss and worker.peak_rss >= rss * 0.9 and rss > 50 << 20
            await models.unload("piper-joe")
            assert not psutil.pid_exists(worker.pid) or psutil.Process(worker.pid).status() == psutil.STATUS_ZOMBIE
            readings.append(me.memory_info().rss)
    growth = readings[-1] - readings[0]
    assert growth < 16 << 20, f"the manager's RSS grew {growth >> 20} MiB over 10 load/unload cycles: {readings}"


PROBE = textwrap.dedent("""
    import asyncio, sys
    from voxbus.config import load_config
    from voxbus.client import ModelClient
    from voxbus.messages import AudioFormat
    from voxbus.pipeline import local_pipeline

    async def main():
        async with local_pipeline(load_config(), "probe", stt=False) as pipe:  # a private server
            models = ModelClient.from_bus(pipe.bus)
            pcm, meta = await models.synthesize("Nothing in this process knows any model library.")
            await models.transcribe(pcm, meta.format)
            await models.complete("Hello", max_tokens=2)
            print(sorted(m for m in sys.modules if m.split(".")[0] in {libs!r}))

    asyncio.run(main())
""")


async def test_the_manager_process_never_imports_a_model_library(tmp_path):
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PROBE.format(libs=set(MODEL_LIBRARIES)), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 300)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert out.decode().strip().splitlines()[-1] == "[]", out.decode()
