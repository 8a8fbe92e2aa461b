#!/usr/bin/env python
"""What word timings cost: the same concurrent transcribe requests through the ModelManager with
`words` on and off, interleaved, in the same run.

Eight Piper sentences (one per "session", 1.5-3 s each) are sent at once, so the manager batches
them (whisper tiny.en, batched path). Each round sends them twice, once with `words` and once
without, which side goes first alternating; the median round's wall time per side is reported.
Also checked: every reply with words lists exactly the words of its text.

    .venv/bin/python bench/word_timings.py [--rounds 7]     # about 1 minute on 2 cores

The last line printed is JSON: {"metric", "value", "unit", "baseline", "ratio", ...}; the ratio
is the time with words over the time without (1.10: words cost 10 % more).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

from benchkit import bench_config, bench_server, cpu_model
from voxbus.bus import open_bus
from voxbus.client import ModelClient
from voxbus.manager import ModelManager
from voxbus.messages import AudioFormat

FMT = AudioFormat(rate=16000)
SENTENCES = [
    "Please turn on the lights in the kitchen.", "What is the weather going to be like tomorrow?",
    "Play some relaxing music in the living room.", "The library closes early on Sundays.",
    "Send a message to Alice saying I am running late.", "The children are playing in the garden.",
    "We need to buy bread, eggs and apples.", "She sold her old bicycle last week.",
]


async def one_round(client: ModelClient, pcm: list[bytes], words: bool) -> tuple[float, list]:
    t = time.perf_counter()
    replies = await asyncio.gather(*(client.transcribe(p, FMT, words=words) for p in pcm))
    return time.perf_counter() - t, replies


async def main(rounds: int) -> dict:
    print(f"machine: {cpu_model()}; whisper tiny.en (bundled), batched path, {len(SENTENCES)} requests at once")
    async with bench_server("voxbench-words-") as (server, tmp):
        config = bench_config(server.url, tmp / "cache")
        async with open_bus(config, name="bench-words") as bus, ModelManager(bus, manager_id="bench-words"):
            client = ModelClient.from_bus(bus)
            pcm = [(await client.synthesize(s, format=FMT))[0] for s in SENTENCES]
            await one_round(client, pcm, True)  # warm-up: the model loads, both paths run once
            await one_round(client, pcm, False)
            times: dict[bool, list[float]] = {True: [], False: []}
            mismatched = batch_sizes = 0
            for r in range(rounds):
                for words in ((True, False) if r % 2 == 0 else (False, True)):
                    seconds, replies = await one_round(client, pcm, words)
                    times[words].append(seconds)
                    batch_sizes = max(batch_sizes, *(x.batch_size for x in replies))
                    if words:
                        mismatched += sum(" ".join(w.word for w in x.words).split() != x.text.split() for x in replies)
    with_words, without = statistics.median(times[True]), statistics.median(times[False])
    print(f"without words: median {without * 1000:.0f} ms per round of {len(SENTENCES)}; "
          f"with words: {with_words * 1000:.0f} ms ({with_words / without:.2f}x); largest batch {batch_sizes}; "
          f"replies whose words differ from their text: {mismatched}")
    return {"metric": "transcribe_round_time_with_words", "value": round(with_words * 1000, 1), "unit": "ms",
            "baseline": round(without * 1000, 1), "baseline_is": "the same round without words, interleaved",
            "ratio": round(with_words / without, 3), "rounds": rounds, "requests_per_round": len(SENTENCES),
            "largest_batch": batch_sizes, "words_differing_from_text": mismatched}


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=7)
    print(json.dumps(asyncio.run(main(p.parse_args().rounds))))
