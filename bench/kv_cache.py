"""Conversation KV cache: time to first token per turn, with the cache versus without it.

4 conversations interleaved round-robin for 8 turns each (histories growing to about 1,500
tokens), greedy decoding, the bundled Gemma 3 270M, through two real ModelManagers on a private
nats-server: one with the conversation cache (`cache.max_conversations: 32`) and one with it
disabled (`0`: every turn re-evaluates its whole history, since the context last held another
conversation, whose system prompt differs). The two sides alternate turn by turn (which goes
first alternates too), so a busy moment hits both. Prints TTFT per turn, whether the greedy
outputs are identical, and the headline as JSON on the last line.

With `--managers 2` the cached side is served by two managers in one queue group (each its own
connection, its own model worker): a conversation's later turns must find the manager holding
its KV state, so the speed-up measures the routing as well as the cache.

    .venv/bin/python bench/kv_cache.py [--conversations 4] [--turns 8] [--managers 1]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path

from benchkit import temp_dir
from voxbus.bus import open_bus
from voxbus.client import ModelClient
from voxbus.config import EmbeddedServerConfig, load_config
from voxbus.manager import ModelManager
from voxbus.server import NatsServer

TOPICS = ["the harbour town", "the mountain railway", "the old observatory", "the river market",
          "the winter festival", "the lighthouse keeper", "the glass museum", "the desert garden"]
SYSTEM = ("You are the guide of a small travel office, talking with traveller {conv}. " + " ".join(
    f"Note {i}: visitors often ask about {t}; answer briefly, mention opening hours, prices in euros, "
    f"how to get there by bus or train, and one local tip about food or quiet places nearby."
    for i, t in enumerate(TOPICS * 2)))


def question(conv: int, turn: int) -> str:
    topic = TOPICS[(conv * 3 + turn) % len(TOPICS)]
    return (f"Traveller {conv} asks, on day {turn} of the trip: we are a family of four with two "
            f"children and a small dog. What should we know about visiting {topic} this week, and "
            f"is it a good idea if it rains in the afternoon?")


class Side:
    """One manager's run of the scenario: its TTFT, outputs and token counts per turn."""

    def __init__(self, client: ModelClient, turns: int, conversations: int) -> None:
        self.client = client
        self.ttft: dict[int, list[float]] = {t: [] for t in range(turns)}
        self.outputs: dict[tuple[int, int], str] = {}
        self.cached: dict[int, list[int]] = {t: [] for t in range(turns)}
        self.prompt: dict[int, list[int]] = {t: [] for t in range(turns)}
        # Each conversation's system prompt differs from its first words: no shared prefix, so
        # without the cache a turn really recomputes its whole history.
        self.history = {c: [{"role": "system", "content": SYSTEM.format(conv=c)}] for c in range(conversations)}

    async def turn(self, conv: int, turn: int) -> None:
        history = self.history[conv]
        history.append({"role": "user", "content": question(conv, turn)})
        start, first = time.perf_counter(), None
        async for event in self.client.generate(messages=history, conversation=f"conv-{conv}",
                                                max_tokens=40, temperature=0.0, seed=1):
            if first is None:
                first = time.perf_counter()
            done = event
        self.ttft[turn].append(((first or time.perf_counter()) - start) * 1000)
        self.outputs[conv, turn] = done.text
        self.cached[turn].append(done.usage.cached_tokens)
        self.prompt[turn].append(done.usage.prompt_tokens)
        history.append({"role": "assistant", "content": done.text})


async def scenario(url: str, cache_dir: Path, conversations: int, turns: int,
                   managers: int = 1) -> tuple[Side, Side, dict[str, int]]:
    def config(prefix: str, enabled: bool):
        return load_config(env={}, overrides={"nats": {"url": url, "prefix": prefix}, "manager": {"cache_dir": str(cache_dir)},
                                              "cache": {"max_conversations": 32 if enabled else 0}})

    async with contextlib.AsyncExitStack() as stack:
        on_bus = await stack.enter_async_context(open_bus(config("kvon", True), name="bench-kv-on"))
        off_bus = await stack.enter_async_context(open_bus(config("kvoff", False), name="bench-kv-off"))
        serving = [await stack.enter_async_context(ModelManager(off_bus, manager_id="bench-off"))]
        for i in range(managers):  # each on its own connection, as separate processes would be
            bus = await stack.enter_async_context(open_bus(config("kvon", True), name=f"bench-kv-on-{i}"))
            serving.append(await stack.enter_async_context(ModelManager(bus, manager_id=f"bench-on-{i}")))
        for manager in serving:
            await manager.pool.load(manager.pool.find("gemma3-270m"))
        sides = {True: Side(ModelClient.from_bus(on_bus), turns, conversations),
                 False: Side(ModelClient.from_bus(off_bus), turns, conversations)}
        for side in sides.values():
            for _ in range(2 * managers):  # (the queue group spreads these: every manager warms up)
                await side.client.complete("Warm up.", max_tokens=2, temperature=0.0)
        homes: dict[str, int] = {}
        for turn in range(turns):
            for conv in range(conversations):
                for enabled in ((True, False) if (turn + conv) % 2 == 0 else (False, True)):
                    await sides[enabled].turn(conv, turn)
                home = sides[True].client.homes.get(f"conv-{conv}", "?")
                homes[home] = homes.get(home, 0) + 1
    return sides[True], sides[False], homes


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--conversations", type=int, default=4)
    ap.add_argument("--turns", type=int, default=8)
    ap.add_argument("--managers", type=int, default=1, help="managers serving the cached side (queue group)")
    args = ap.parse_args()
    with temp_dir("voxbus-bench-kv-") as tmp:
        async with NatsServer(EmbeddedServerConfig(port=0, monitor_port=0), store_dir=tmp / "js") as server:
            on, off, homes = await scenario(server.url, tmp / "cache", args.conversations, args.turns, args.managers)
    c_ttft, c_out, c_cached, c_prompt = on.ttft, on.outputs, on.cached, on.prompt
    u_ttft, u_out = off.ttft, off.outputs
    print(f"{'turn':>4} {'prompt tok':>10} {'cached tok':>10} {'TTFT cached ms':>15} {'TTFT no cache ms':>17} {'speed-up':>8}")
    for t in range(args.turns):
        c, u = statistics.median(c_ttft[t]), statistics.median(u_ttft[t])
        print(f"{t + 1:>4} {statistics.median(c_prompt[t]):>10.0f} {statistics.median(c_cached[t]):>10.0f} "
              f"{c:>15.1f} {u:>17.1f} {u / c:>7.1f}x")
    identical = c_out == u_out
    differing = [k for k in c_out if c_out[k] != u_out.get(k)]
    last = args.turns - 1
    c1, c_last, u_last = statistics.median(c_ttft[0]), statistics.median(c_ttft[last]), statistics.median(u_ttft[last])
    if args.managers > 1:
        print(f"cached turns served by: {', '.join(f'{m} {n}' for m, n in sorted(homes.items()))}")
    print(f"greedy outputs identical with and without the cache: {identical}"
          + (f" (differ at {differing[:4]})" if differing else ""))
    print(f"turn {last + 1}: cached TTFT is {c_last / c1:.2f}x turn 1's (goal <= 1.25) and "
          f"{u_last / c_last:.1f}x faster than recomputing (goal >= 10)")
    print(json.dumps({"metric": f"kv_cache_ttft_speedup_turn{last + 1}", "value": round(u_last / c_last, 2), "unit": "x",
                      "baseline": round(u_last, 1), "ratio": round(u_last / c_last, 2),
                      "cached_ttft_ms": round(c_last, 1), "turn1_ttft_ms": round(c1, 1),
                      "cached_vs_turn1": round(c_last / c1, 3), "identical_outputs": identical,
                      "managers": args.managers, "turns_per_manager": dict(sorted(homes.items())),
                      "history_tokens": round(statistics.median(c_prompt[last]))}))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
