"""Voice loop latency: from the end of the user's speech to the first reply audio chunk
published, over spoken questions, through the whole pipeline (STT service, manager, assistant,
TTS service) on a private nats-server with the bundled models.

Two cases, question by question in the same run:
- live (the headline): the question is published in real time and silence follows it in real
  time, with no end event: the STT's own endpointing ends the turn, as in a conversation. The
  clock starts at the end of the voiced speech (the last 10 ms above a tenth of the loudest).
- end event (the earlier figure): the question's frames at once, then the session's end event,
  which closes the utterance at once; the clock starts at its last frame.
Baseline, same run: the same three model steps called directly and one after another through the
model client (transcribe the question, generate until the first sentence is complete, synthesize
it): what the loop would cost if the stages did not overlap. ratio = live p50 / baseline p50.

Also measured: false endings, on questions spoken with a pause in the middle (two halves with
0.3 s of silence between, less than stt.min_silence): a turn cut at the pause is one; and
whether replies got worse: each live reply's first 3 s of audio, heard back by the STT model,
against the reply's text (WER over the words heard).

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

import jiwer
import numpy as np

from benchkit import cpu_model, pct, temp_dir
from voxbus.audio import encode_pcm, frame_bytes, pcm_to_float, to_mono
from voxbus.client import ModelClient
from voxbus.config import load_config
from voxbus.demo import voice_turn
from voxbus.ingest import SessionPublisher
from voxbus.messages import AudioFormat, GenerateChunk, Transcript, codec
from voxbus.pipeline import local_pipeline
from voxbus.sentences import SentenceSplitter

QUESTIONS = ["What is the capital of France?", "How do I boil an egg?", "What time is it in Tokyo?",
             "Can you recommend a good book?", "Why is the sky blue?", "How far away is the moon?",
             "What should I cook for dinner tonight?", "Tell me a fun fact about cats.",
             "How do plants make food?", "What is the tallest mountain?", "Who invented the telephone?",
             "What is a good name for a dog?"]
PAUSED = [("What is the weather like", "in Paris today?"), ("Can you tell me", "a short story about a dragon?"),
          ("How many people live", "in New York City?"), ("Please remind me", "to call my sister tomorrow."),
          ("What is the best way", "to learn how to swim?"), ("Who was the first person", "to walk on the moon?")]
PAUSE_S = 0.3
_WORDS = jiwer.Compose([jiwer.ToLowerCase(), jiwer.SubstituteRegexes({r"[^a-z0-9' ]+": " "}),
                        jiwer.RemoveMultipleSpaces(), jiwer.Strip(), jiwer.ReduceToListOfListOfWords()])


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
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="a config override for this run, e.g. stt.early_final=false")
    args = ap.parse_args()
    with temp_dir("voxbus-bench-loop-") as tmp:
        return await measure(args, tmp)


def overrides(pairs: list[str], tmp: Path) -> dict:
    over: dict = {"manager": {"cache_dir": str(tmp / "cache")}, "assistant": {"temperature": 0.0}}
    for pair in pairs:
        key, value = pair.split("=", 1)
        section, name = key.split(".", 1)
        over.setdefault(section, {})[name] = json.loads(value) if value[:1] in "0123456789-tfn[{\"" else value
    return over


async def heard_back(client: ModelClient, res) -> tuple[int, int]:
    """(errors, words) of the reply's first 3 s of audio heard by the STT model against its text."""
    turn = res.speech
    if turn is None or turn.format is None:
        return 0, 0
    fmt = turn.format
    pcm = turn.pcm[: frame_bytes(fmt, 3000)]
    heard = _WORDS((await client.transcribe(pcm, fmt)).text)[0]
    said = _WORDS(res.reply)[0][: max(len(heard), 1)]
    if not heard:
        return len(said), len(said)
    out = jiwer.process_words(" ".join(said), " ".join(heard))
    return out.substitutions + out.deletions + out.insertions, len(said)


async def paused_turn(bus, client: ModelClient, halves: tuple[str, str], n: int) -> int:
    """Transcripts the STT made of one question spoken with a pause in the middle (1: right)."""
    parts, fmt = [], None
    for text in halves:
        pcm, meta = await client.synthesize(text)
        fmt = meta.format
        parts.append(to_mono(pcm_to_float(pcm, fmt)))
    gap = np.zeros(int(PAUSE_S * fmt.rate), np.float32)
    tail = np.zeros(int(1.5 * fmt.rate), np.float32)
    audio = np.concatenate([trim(parts[0]), gap, trim(parts[1]), tail])
    sid, got = f"paused-{n}", []

    async def on(msg) -> None:
        got.append(codec.decode(msg.data, Transcript))

    sub = await bus.nc.subscribe(bus.subjects.transcript(sid), cb=on)
    try:
        pub = SessionPublisher(bus, sid, realtime=True)
        await pub.send(encode_pcm(audio, AudioFormat(rate=fmt.rate)), AudioFormat(rate=fmt.rate))
        await pub.end()
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)
    finally:
        await sub.unsubscribe()
    return len(got)


def trim(x: np.ndarray) -> np.ndarray:
    """The voiced part only: the pause between halves is then exactly PAUSE_S."""
    loud = np.nonzero(np.abs(x) > 0.05 * np.abs(x).max())[0]
    return x[loud[0]: loud[-1] + 1] if len(loud) else x


async def measure(args, tmp: Path) -> int:
    config = load_config(env={}, overrides=overrides(args.set, tmp))
    questions = (QUESTIONS * 4)[: args.questions]
    cases = {"live": [], "end event": []}
    stages: dict[str, dict[str, list[float]]] = {c: {} for c in cases}
    base_s, errors, words, cuts = [], 0, 0, []
    async with local_pipeline(config, "bench-loop", stt=True, tts=True, assistant=True) as pipe:
        client = ModelClient.from_bus(pipe.bus)
        for kind in ("stt", "llm", "tts"):
            await client.load(config.manager.defaults[kind])
        await voice_turn(pipe, "Warm up, please.", None)  # first-inference allocations out of the way
        await voice_turn(pipe, "Warm up, please.", None, live=True)
        for q in questions:  # the sides alternate, question by question: a busy moment hits each
            base_s.append(await direct_baseline(client, q, config.assistant.system_prompt, config.assistant.max_tokens))
            for case in cases:
                res = await voice_turn(pipe, q, None, live=case == "live")
                first = res.stages.get("first audio chunk")
                if first is None:
                    print(f"  {q!r} ({case}): no audio came back", file=sys.stderr)
                    continue
                cases[case].append(first)
                for k, v in res.stages.items():
                    stages[case].setdefault(k, []).append(v)
                if case == "live":
                    e, n = await heard_back(client, res)
                    errors, words = errors + e, words + n
                print(f"  {q:<40} {case:<9} transcript {res.stages.get('transcript', 0) * 1000:6.0f} ms  first audio "
                      f"{first * 1000:6.0f} ms | heard: {res.transcript!r} | reply: {res.reply[:50]!r}", file=sys.stderr)
        for i, halves in enumerate(PAUSED):
            cuts.append(await paused_turn(pipe.bus, client, halves, i))
    return report(cases, stages, base_s, errors, words, cuts, args)


def report(cases, stages, base_s, errors, words, cuts, args) -> int:
    p50, p95 = statistics.median(cases["live"]), pct(cases["live"], 95)
    o50, o95 = statistics.median(cases["end event"]), pct(cases["end event"], 95)
    b50 = statistics.median(base_s)
    false_endings = sum(n > 1 for n in cuts)
    print(f"machine: {cpu_model()}; overrides: {args.set or 'none'}")
    for case in cases:
        print(f"\n{case}: {'stage (after the end of speech)':<34} {'p50 ms':>8} {'p95 ms':>8}")
        for k, v in stages[case].items():
            print(f"  {k:<40} {statistics.median(v) * 1000:>8.0f} {pct(v, 95) * 1000:>8.0f}")
    met = p50 <= 0.7 and p95 <= 0.9
    print(f"\nlive: end of speech -> first reply audio over {len(cases['live'])} questions: p50 {p50 * 1000:.0f} ms, "
          f"p95 {p95 * 1000:.0f} ms (goal p50 <= 700, p95 <= 900: {'met' if met else 'missed'}); "
          f"end event: p50 {o50 * 1000:.0f} ms, p95 {o95 * 1000:.0f} ms; sequential direct calls p50 {b50 * 1000:.0f} ms")
    print(f"false endings: {false_endings} of {len(cuts)} questions with a {PAUSE_S:g} s pause inside "
          f"(transcripts per question: {cuts}); first reply audio heard back: WER {errors / max(words, 1) * 100:.1f} % "
          f"over {words} words")
    print(json.dumps({"metric": "voice_loop_first_audio_p50", "live": True, "value": round(p50 * 1000, 1), "unit": "ms",
                      "p95_ms": round(p95 * 1000, 1), "baseline": round(b50 * 1000, 1), "ratio": round(p50 / b50, 3),
                      "end_event_p50_ms": round(o50 * 1000, 1), "end_event_p95_ms": round(o95 * 1000, 1),
                      "false_endings": false_endings, "paused_questions": len(cuts),
                      "heard_back_wer": round(errors / max(words, 1), 3), "questions": len(cases["live"]),
                      "goal_met": bool(met)}))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
