"""Budgets, eviction and refusal with the real bundled models (footprints measured at load)."""

import asyncio

import pytest

from voxbus.client import ModelClient
from voxbus.config import Budget
from voxbus.errors import ModelRefused
from voxbus.messages import AudioFormat, ModelEvent, decode
from tests.helpers import make_config, running_manager

pytestmark = pytest.mark.models


async def _events(bus):
    events: list[ModelEvent] = []

    async def collect(msg):
        events.append(decode(msg.data, ModelEvent))

    await bus.nc.subscribe(bus.subjects.admin("model"), cb=collect)
    await bus.nc.flush()
    return events


async def _use(client, kind):
    if kind == "tts":
        return await client.synthesize("Hello.")
    if kind == "stt":
        return await client.transcribe(b"\x00\x00" * 16000, AudioFormat())
    return await client.complete("Hello", max_tokens=2, temperature=0)


async def test_budget_for_two_of_three_evicts_lru_keeps_pinned_refuses_too_big(nats_server, tmp_path):
    config = make_config(nats_server.url, tmp_path / "cache", manager={"budgets": {"ram": "100%"}})
    async with running_manager(config) as (bus, manager):
        client = ModelClient.from_bus(bus)
        pool = manager.pool
        stt, tts, llm = (pool.slots[i] for i in ("whisper-tiny-en", "piper-joe", "gemma3-270m"))
        # Measure every model's real footprint once, then start empty.
        for kind in ("stt", "tts", "llm"):
            await _use(client, kind)
        for model in ("whisper-tiny-en", "piper-joe", "gemma3-270m"):
            await client.unload(model)
        events = await _events(bus)

        await _use(client, "stt")
        await _use(client, "tts")
        need_llm = pool.loader.expected(llm)[0]
        assert need_llm > 0 and stt.ram > 0 and tts.ram > 0
        # Room for the TTS voice and the LLM, not for all three: Whisper (least recently used) must go.
        config.manager.budgets.ram = Budget(absolute=tts.ram + need_llm + stt.ram // 2)
        await _use(client, "llm")
        await asyncio.sleep(0.2)
        assert [(e.event, e.model) for e in events if e.event == "evicted"] == [("evicted", "whisper-tiny-en")]
        evicted = next(e for e in events if e.event == "evicted")
        assert evicted.reason == "make room for gemma3-270m" and evicted.ram_bytes == stt.ram
        assert (stt.state, tts.state, llm.state) == ("unloaded", "loaded", "loaded")
        stored = await bus.js.get_last_msg(bus.subjects.stream("admin"), bus.subjects.admin("model"))
        assert decode(stored.data, ModelEvent).event == "loaded"  # the ADMIN stream keeps the history

        # Pinned: Whisper is now least recently used but pinned, so the TTS voice goes instead.
        for model in ("piper-joe", "gemma3-270m"):
            await client.unload(model)
        stt.spec.pinned = True
        await _use(client, "stt")
        await _use(client, "tts")
        events.clear()
        await _use(client, "llm")
        await asyncio.sleep(0.2)
        assert [(e.event, e.model) for e in events if e.event == "evicted"] == [("evicted", "piper-joe")]
        assert stt.state == "loaded" and llm.state == "loaded"

        # Larger than the whole budget: refused with a clear error, and nothing else breaks.
        await client.unload("gemma3-270m")
        config.manager.budgets.ram = Budget(absolute=need_llm - 1)
        events.clear()
        with pytest.raises(ModelRefused, match="more than the whole RAM budget"):
            await _use(client, "llm")
        await asyncio.sleep(0.2)
        assert any(e.event == "refused" and e.model == "gemma3-270m" for e in events)
        assert (await _use(client, "stt")).model.id == "whisper-tiny-en"


async def test_idle_models_are_unloaded_after_their_ttl(nats_server, tmp_path):
    config = make_config(nats_server.url, tmp_path / "cache", models={"piper-joe": {"ttl": "1s"}})
    async with running_manager(config) as (bus, manager):
        client = ModelClient.from_bus(bus)
        events = await _events(bus)
        await client.synthesize("Soon idle.")
        slot = manager.pool.slots["piper-joe"]
        assert slot.loaded
        def idle_unload_seen():
            return any(e.event == "unloaded" and e.model == "piper-joe" and "idle" in e.reason for e in events)

        for _ in range(50):
            await asyncio.sleep(0.1)
            if idle_unload_seen():
                break
        assert idle_unload_seen() and not slot.loaded
