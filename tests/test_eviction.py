"""Budgets, eviction and refusal with the real bundled models (footprints measured at load)."""

import asyncio

import pytest

from voxbus.client import ModelClient
from voxbus.errors import ModelRefused
from voxbus.messages import AudioFormat, ModelEvent, decode
from tests.helpers import delivered, make_config, running_manager

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
    cache = tmp_path / "cache"
    # Measure every model's real footprint once (kept in <cache>/footprints.json for later loads).
    async with running_manager(make_config(nats_server.url, cache, manager={"budgets": {"ram": "100%"}})) as (bus, m):
        client = ModelClient.from_bus(bus)
        for kind in ("stt", "tts", "llm"):
            await _use(client, kind)
        need = {i: m.pool.loader.expected(m.pool.slots[i])[0] for i in ("whisper-tiny-en", "piper-joe", "gemma3-270m")}
    assert all(n > 0 for n in need.values()), need
    stt_ram, tts_ram, llm_ram = need["whisper-tiny-en"], need["piper-joe"], need["gemma3-270m"]

    # Room for the TTS voice and the LLM, not for all three: Whisper (least recently used) must go.
    budget = {"budgets": {"ram": f"{tts_ram + llm_ram + stt_ram // 2}B"}}
    async with running_manager(make_config(nats_server.url, cache, manager=budget)) as (bus, manager):
        client = ModelClient.from_bus(bus)
        pool = manager.pool
        stt, tts, llm = (pool.slots[i] for i in ("whisper-tiny-en", "piper-joe", "gemma3-270m"))
        events = await _events(bus)
        await _use(client, "stt")
        await _use(client, "tts")
        await _use(client, "llm")
        await delivered(bus, manager)
        assert [(e.event, e.model) for e in events if e.event == "evicted"] == [("evicted", "whisper-tiny-en")]
        evicted = next(e for e in events if e.event == "evicted")
        assert evicted.reason == "make room for gemma3-270m" and evicted.ram_bytes == stt.ram
        assert (stt.state, tts.state, llm.state) == ("unloaded", "loaded", "loaded")
        stored = await bus.js.get_last_msg(bus.subjects.stream("admin"), bus.subjects.admin("model"))
        assert decode(stored.data, ModelEvent).event == "loaded"  # the ADMIN stream keeps the history

    # Pinned: Whisper is least recently used but pinned, so the TTS voice goes instead.
    config = make_config(nats_server.url, cache, manager=budget, models={"whisper-tiny-en": {"pinned": True}})
    async with running_manager(config) as (bus, manager):
        client = ModelClient.from_bus(bus)
        stt, llm = manager.pool.slots["whisper-tiny-en"], manager.pool.slots["gemma3-270m"]
        await _use(client, "stt")
        await _use(client, "tts")
        events = await _events(bus)
        await _use(client, "llm")
        await delivered(bus, manager)
        assert [(e.event, e.model) for e in events if e.event == "evicted"] == [("evicted", "piper-joe")]
        assert stt.state == "loaded" and llm.state == "loaded"

    # Larger than the whole budget: refused with a clear error, and nothing else breaks.
    config = make_config(nats_server.url, cache, manager={"budgets": {"ram": f"{llm_ram - 1}B"}})
    async with running_manager(config) as (bus, manager):
        client = ModelClient.from_bus(bus)
        events = await _events(bus)
        with pytest.raises(ModelRefused, match="more than the whole RAM budget"):
            await _use(client, "llm")
        await delivered(bus, manager)
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
