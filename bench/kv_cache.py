"""Conversation KV cache: time to first token per turn, with the cache versus without it.

4 conversations interleaved round-robin for 8 turns each (histories growing to about 1,500
tokens), greedy decoding, the bundled Gemma 3 270M, through a real ModelManager on a private
nats-server. The same scenario runs twice in this process: once with the conversation cache
(`cache.max_conversations: 32`) and once with it disabled (`0`: every turn re-evaluates its
whole history, since the context last held another conversation, whose system prompt differs). Prints TTFT per turn, whether
the greedy outputs are identical, and the headline as JSON on the last line.

    .venv/bin/python bench/kv_cache.py [--conversations 4] [--turns 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

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


async def scenario(url: str, cache_dir: Path, enabled: bool, conversations: int, turns: int):
    config = load_config(env={}, overrides={
        "nats": {"url": url}, "manager": {"cache_dir": str(cache_dir)},
        "cache": {"max_conversations": 32 if enabled else 0}})
    ttft: dict[int, list[float]] = {t: [] for t in range(turns)}
    outputs: dict[tuple[int, int], str] = {}
    cached_tokens: dict[int, list[int]] = {t: [] for t in range(turns)}
    prompt_tokens: dict[int, list[int]] = {t: [] for t in range(turns)}
    async with open_bus(config, name="bench-kv") as bus, ModelManager(bus, manager_id="bench") as manager:
        client = ModelClient.from_bus(bus)
        await client.load("gemma3-270m")
        await client.complete("Warm up.", max_tokens=2, temperature=0.0)
        # Each conversation's system prompt differs from its first words: no shared prefix, so
        # without the cache a turn really recomputes its whole history.
        history = {c: [{"role": "system", "content": SYSTEM.format(conv=c)}] for c in range(conversations)}
        for turn in range(turns):
            for conv in range(conversations):
                history[conv].append({"role": "user", "content": question(conv, turn)})
                start = time.perf_counter()
                first = None
                async for event in client.generate(messages=history[conv], conversation=f"conv-{conv}",
                                                   max_tokens=40, temperature=0.0, seed=1):
                    if first is None:
                        first = time.perf_counter()
                    done = event
                ttft[turn].append(((first or time.perf_counter()) - start) * 1000)
                outputs[conv, turn] = done.text
                cached_tokens[turn].append(done.usage.cached_tokens)
                prompt_tokens[turn].append(done.usage.prompt_tokens)
                history[conv].append({"role": "assistant", "content": done.text})
    return ttft, outputs, cached_tokens, prompt_tokens


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--conversations", type=int, default=4)
    ap.add_argument("--turns", type=int, default=8)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="voxbus-bench-kv-"))
    async with NatsServer(EmbeddedServerConfig(port=0, monitor_port=0), store_dir=tmp / "js") as server:
        runs = {}
        for enabled in (True, False):
            runs[enabled] = await scenario(server.url, tmp / "cache", enabled, args.conversations, args.turns)
    (c_ttft, c_out, c_cached, c_prompt), (u_ttft, u_out, _, u_prompt) = runs[True], runs[False]
    print(f"{'turn':>4} {'prompt tok':>10} {'cached tok':>10} {'TTFT cached ms':>15} {'TTFT no cache ms':>17} {'speed-up':>8}")
    for t in range(args.turns):
        c, u = statistics.median(c_ttft[t]), statistics.median(u_ttft[t])
        print(f"{t + 1:>4} {statistics.median(c_prompt[t]):>10.0f} {statistics.median(c_cached[t]):>10.0f} "
              f"{c:>15.1f} {u:>17.1f} {u / c:>7.1f}x")
    identical = c_out == u_out
    differing = [k for k in c_out if c_out[k] != u_out.get(k)]
    last = args.turns - 1
    c1, c_last, u_last = statistics.median(c_ttft[0]), statistics.median(c_ttft[last]), statistics.median(u_ttft[last])
    print(f"greedy outputs identical with and without the cache: {identical}"
          + (f" (differ at {differing[:4]})" if differing else ""))
    print(f"turn {last + 1}: cached TTFT is {c_last / c1:.2f}x turn 1's (goal <= 1.25) and "
          f"{u_last / c_last:.1f}x faster than recomputing (goal >= 10)")
    print(json.dumps({"metric": f"kv_cache_ttft_speedup_turn{last + 1}", "value": round(u_last / c_last, 2), "unit": "x",
                      "baseline": round(u_last, 1), "ratio": round(u_last / c_last, 2),
                      "cached_ttft_ms": round(c_last, 1), "turn1_ttft_ms": round(c1, 1),
                      "cached_vs_turn1": round(c_last / c1, 3), "identical_outputs": identical,
                      "history_tokens": round(statistics.median(c_prompt[last]))}))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
