"""`voxbus models` against a running manager, and a Coqui voice served through the manager."""

import asyncio
import json
import os
import sys

import numpy as np
import psutil
import pytest

from voxbus.client import ModelClient
from tests.helpers import make_config, running_manager

pytestmark = pytest.mark.models


async def voxbus(*args):
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "voxbus", *args,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    return proc.returncode, out.decode(), err.decode()


async def test_models_table_load_and_unload(nats_server, tmp_path):
    config = make_config(nats_server.url, tmp_path / "cache")
    async with running_manager(config, "cli-manager"):
        rc, out, err = await voxbus("models", "load", "piper-joe", "--nats", nats_server.url)
        assert rc == 0, err
        assert "piper-joe: loaded on manager cli-manager" in out
        rc, out, err = await voxbus("models", "--nats", nats_server.url)
        assert rc == 0, err
        lines = out.splitlines()
        assert lines[0] == "manager cli-manager"
        assert lines[1].split()[:4] == ["ID", "KIND", "BACKEND", "STATE"]
        rows = {line.split()[0]: line for line in lines[2:-1] if not line.startswith(" ")}
        assert set(rows) == {"gemma3-270m", "whisper-tiny-en", "piper-joe"}
        assert " loaded " in rows["piper-joe"] and "en_US-joe-medium" in rows["piper-joe"]
        assert " unloaded " in rows["gemma3-270m"]
        # A loaded model's worker process is listed under it, with its pid, state and memory.
        piper_at = lines.index(next(line for line in lines if line.startswith("piper-joe")))
        worker = lines[piper_at + 1]
        assert worker.startswith("  └ worker 0 (pid "), out
        state, rss, vram, queue, crashes, jobs = worker.split(")", 1)[1].split()
        assert state == "idle" and rss.endswith("M") and int(rss[:-1]) > 0 and (queue, crashes) == ("0", "0"), out
        pid = int(worker.split("pid ")[1].split(")")[0])
        assert psutil.pid_exists(pid) and pid != os.getpid()
        rc, out, err = await voxbus("models", "--json", "--nats", nats_server.url)
        listed = {m["id"]: m for m in json.loads(out)["models"]}["piper-joe"]
        (only,) = listed["workers"]
        assert rc == 0 and only["pid"] == pid and only["rss_bytes"] > 0 and only["state"] == "idle"
        assert only["queue"] == 0 and only["crashes"] == 0 and listed["max_queue"] == 32
        rc, out, err = await voxbus("models", "unload", "piper-joe", "--nats", nats_server.url)
        assert rc == 0 and "piper-joe: unloaded" in out
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        rc, out, err = await voxbus("models", "load", "no-such-model", "--nats", nats_server.url)
        assert rc == 1 and "unknown_model" in err and "Traceback" not in err


async def test_models_without_a_server_is_a_clear_error(tmp_path):
    rc, out, err = await voxbus("models", "--nats", "nats://127.0.0.1:9")
    assert rc == 1 and "cannot reach NATS at nats://127.0.0.1:9" in err


async def test_coqui_voice_through_the_manager(nats_server, tmp_path):
    from tests.coqui_model import build_random_vits

    model_path, config_path = build_random_vits(tmp_path / "vits")
    config = make_config(nats_server.url, tmp_path / "cache", models={"coqui-test": {
        "kind": "tts", "backend": "coqui", "source": {"path": str(model_path), "config": str(config_path)}}})
    async with running_manager(config) as (bus, manager):
        client = ModelClient.from_bus(bus)
        pcm, meta = await client.synthesize("Hello from voxbus.", model="coqui-test")
        assert meta.model.backend == "coqui" and meta.format.rate == 16000 and meta.duration > 0.1
        samples = np.frombuffer(pcm, dtype="<i2")
        assert abs(len(samples) / 16000 - meta.duration) < 0.001
        assert np.abs(samples).max() > 0
