"""The conversation KV cache with the real Gemma model: same greedy tokens as recomputing, across
interleaved conversations, evictions, spills to disk and a warm restart."""


import pytest

from tests.helpers import delivered, make_config, running_manager
from voxbus.client import ModelClient
from voxbus.messages import CacheEvent, codec

pytestmark = pytest.mark.models

QUESTIONS = ["Tell me about the river in one sentence.", "What do people eat there?", "And what about winter?"]


def system(conv: int) -> str:
    return f"You are guide number {conv} of a travel office. Answer briefly and kindly."


async def interleave(client: ModelClient, convs: int = 2, turns: int = 3, start_turn: int = 0, history=None):
    """Round-robin turns; returns {(conv, turn): (text, cached_tokens, prompt_tokens)} and the histories."""
    history = history or {c: [{"role": "system", "content": system(c)}] for c in range(convs)}
    out = {}
    for turn in range(start_turn, start_turn + turns):
        for conv in range(convs):
            history[conv].append({"role": "user", "content": QUESTIONS[turn % len(QUESTIONS)]})
            done = await client.complete(messages=history[conv], conversation=f"c{conv}", max_tokens=12,
                                         temperature=0.0)
            history[conv].append({"role": "assistant", "content": done.text})
            out[conv, turn] = (done.text, done.usage.cached_tokens, done.usage.prompt_tokens)
    return out, history


async def cache_events(bus) -> tuple[list[CacheEvent], object]:
    events: list[CacheEvent] = []

    async def on_event(msg):
        events.append(codec.decode(msg.data, CacheEvent))

    return events, await bus.nc.subscribe(bus.subjects.admin("cache"), cb=on_event)


async def test_cached_turns_match_recomputed_ones_and_evaluate_only_new_tokens(nats_server, tmp_path):
    results = {}
    for name, cache in (("off", {"max_conversations": 0}), ("on", {}), ("tiny", {"max_conversations": 1})):
        config = make_config(nats_server.url, tmp_path / "cache", cache=cache)
        async with running_manager(config, f"kv-{name}") as (bus, manager):
            events, sub = await cache_events(bus)
            results[name], _ = await interleave(ModelClient.from_bus(bus))
            await delivered(bus, manager)
            await sub.unsubscribe()
            results[name + "-events"] = events
    texts = {k: {key: v[0] for key, v in results[k].items()} for k in ("off", "on", "tiny")}
    assert texts["on"] == texts["off"] == texts["tiny"]  # token for token, with and without states
    for (conv, turn), (_, cached, prompt) in results["on"].items():
        if turn > 0:  # each later turn reuses its whole history but the new question
            assert cached >= prompt - 40, (conv, turn, cached, prompt)
    later_off = [cached for (conv, turn), (_, cached, _) in results["off"].items() if turn > 0]
    assert max(later_off) < 10  # without the cache the other conversation's tokens are useless
    assert not results["on-events"]
    evicted = [e for e in results["tiny-events"] if e.event == "evicted"]
    assert evicted and all(e.model == "gemma3-270m" and e.bytes > 0 and "max_conversations" in e.reason
                           for e in evicted)


async def test_spilled_states_survive_a_warm_restart(nats_server, tmp_path):
    spill = tmp_path / "spill"
    config = make_config(nats_server.url, tmp_path / "cache", cache={"max_conversations": 1, "spill_dir": str(spill)})
    async with running_manager(config, "kv-first") as (bus, manager):
        events, sub = await cache_events(bus)
        first, history = await interleave(ModelClient.from_bus(bus), turns=2)
        await delivered(bus, manager)
        await sub.unsubscribe()
    assert any(e.event == "spilled" for e in events) and any(e.event == "restored" for e in events)
    assert list(spill.rglob("*.kv"))  # the unload kept the resident state on disk too
    async with running_manager(config, "kv-second") as (bus, manager):
        events, sub = await cache_events(bus)
        resumed, _ = await interleave(ModelClient.from_bus(bus), turns=1, start_turn=2, history=history)
        await delivered(bus, manager)
        await sub.unsubscribe()
    assert [e.event for e in events if e.event == "restored"]
    for conv in (0, 1):
        _, cached, prompt = resumed[conv, 2]
        assert cached >= prompt - 40, (conv, cached, prompt)  # resumed from disk, not recomputed
    # Reference: the same three turns computed from scratch without any cache.
    ref_config = make_config(nats_server.url, tmp_path / "cache", cache={"max_conversations": 0})
    async with running_manager(ref_config, "kv-ref") as (bus, manager):
        ref, _ = await interleave(ModelClient.from_bus(bus), turns=3)
    assert {k: v[0] for k, v in {**first, **resumed}.items()} == {k: v[0] for k, v in ref.items()}
