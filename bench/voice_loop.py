"""Voice loop latency: from the end of the user's speech (last frame published) to the first
reply audio chunk published, over spoken questions, through the whole pipeline (STT service,
manager, assistant, TTS service) on a private nats-server with the bundled models.

Baseline, same run: the same three model steps called directly and one after another through the
model client, no services and no streaming between them (transcribe the question, generate until
the first sentence is complete, synthesize that sentence): what the loop would cost if the stages
did not overlap. ratio = pipeline p50 / baseline p50.

    .venv/bin/python bench/voice_loop.py [--questions 12]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

from benchkit import pct, temp_dir
from voxbus.client import ModelClient
from voxbus.config import load_config
from voxbus.demo import voice_turn
from voxbus.messages import GenerateChunk
from voxbus.pipeline import local_pipeline
from voxbus.sentences import SentenceSplitter

QUESTIONS = ["What is the capital of France?", "How do I boil an egg?", "What time is it in Tokyo?",
             "Can you recommend a good book?", "Why is the sky blue?", "How far away is the moon?",
             "What should I cook for dinner tonight?", "Tell me a fun fact about cats.",
             "How do plants make food?", "What is the tallest mountain?", "Who invented the telephone?",
             "What is a good name for a dog?"]


async def direct_baseline(client: ModelClient, question: str, system: str, max_tokens: int) -> float:
    pcm, meta = await client.synthesize(question)
    start = time.perf_counter()
    text = (await client.transcribe(pcm, meta.format)).text
    splitter = SentenceSplitter()
    first = None
    async for event in client.generate(messages=[{"role": "system", "content": system},
                                                 {"role": "user", "content": text}],
                                       max_tokens=max_tokens, temperature=0.0):
        if isinstance(event, GenerateChunk) and first is None:
            done = splitter.feed(event.text)
            if done:
                first = done[0]
                break
    first = first or (splitter.flush() or ["Okay."])[0]
    await client.synthesize(first)
    return time.perf_counter() - start


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--questions", type=int, default=12)
    args = ap.parse_args()
    with temp_dir("voxbus-bench-loop-") as tmp:
        return await measure(args, tmp)


async def measure(args, tmp: Path) -> int:
    config = load_config(env={}, overrides={"manager": {"cache_dir": str(tmp / "cache")},
                                            "assistant": {"temperature": 0.0}})
    questions = (QUESTIONS * 4)[: args.questions]
    loop_s, stages = [], {}
    base_s = []
    async with local_pipeline(config, "bench-loop", stt=True, tts=True, assistant=True) as pipe:
        client = ModelClient.from_bus(pipe.bus)
        for kind in ("stt", "llm", "tts"):
            await client.load(config.manager.defaults[kind])
        await voice_turn(pipe, "Warm up, please.", None)  # first-inference allocations out of the way
        for q in questions:  # the two sides alternate, question by question: a busy moment hits both
            base_s.append(await direct_baseline(client, q, config.assistant.system_prompt, config.assistant.max_tokens))
            res = await voice_turn(pipe, q, None)
            first = res.stages.get("first audio chunk")
            if first is None:
                print(f"  {q!r}: no audio came back", file=sys.stderr)
                continue
            loop_s.append(first)
            for k, v in res.stages.items():
                stages.setdefault(k, []).append(v)
            print(f"  {q:<42} transcript {res.stages.get('transcript', 0) * 1000:6.0f} ms  first token "
                  f"{res.stages.get('llm first token', 0) * 1000:6.0f} ms  first audio {first * 1000:6.0f} ms"
                  f"  | heard: {res.transcript!r}")
    p50, p95, b50 = statistics.median(loop_s), pct(loop_s, 95), statistics.median(base_s)
    print(f"{'stage (after the last frame)':<30} {'p50 ms':>8} {'p95 ms':>8}")
    for k, v in stages.items():
        print(f"{k:<30} {statistics.median(v) * 1000:>8.0f} {pct(v, 95) * 1000:>8.0f}")
    print(f"end of speech -> first reply audio over {len(loop_s)} questions: p50 {p50 * 1000:.0f} ms, "
          f"p95 {p95 * 1000:.0f} ms (goal p50 <= 1000 ms); sequential direct calls p50 {b50 * 1000:.0f} ms")
    print(json.dumps({"metric": "voice_loop_first_audio_p50", "value": round(p50 * 1000, 1), "unit": "ms",
                      "baseline": round(b50 * 1000, 1), "ratio": round(p50 / b50, 3),
                      "p95_ms": round(p95 * 1000, 1), "questions": len(loop_s)}))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
