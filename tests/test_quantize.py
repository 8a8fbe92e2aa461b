"""Asking for a GGUF quantization other than the file's: quantized once with llama.cpp, cached."""

import psutil
import pytest

from voxbus.client import ModelClient
from tests.helpers import make_config, running_manager

pytestmark = pytest.mark.models


async def test_requantized_gguf_is_made_once_and_reused(nats_server, tmp_path):
    cache = tmp_path / "cache"
    config = make_config(nats_server.url, cache, models={"gemma3-270m": {"quantization": "8-bit"}})
    async with running_manager(config) as (bus, manager):
        client = ModelClient.from_bus(bus)
        first = await client.complete("The capital of France is", max_tokens=6, temperature=0)
        made = list((cache / "quantized").glob("*-q8_0.gguf"))
        assert len(made) == 1 and made[0].stat().st_size > 0
        stamp = made[0].stat().st_mtime_ns
        info = {m.id: m for m in (await client.list_models()).models}["gemma3-270m"]
        assert info.quantization == "q8_0"
        # The model's worker process runs the quantized file: llama.cpp maps it into memory.
        worker = manager.pool.slots["gemma3-270m"].workers[0]
        assert str(made[0]) in {m.path for m in psutil.Process(worker.pid).memory_maps()}
        await client.unload("gemma3-270m")
        second = await client.complete("The capital of France is", max_tokens=6, temperature=0)
        assert second.text == first.text and first.usage.completion_tokens == 6
    assert list((cache / "quantized").glob("*.gguf")) == made
    assert made[0].stat().st_mtime_ns == stamp  # reused, not made again
