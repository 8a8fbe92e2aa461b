"""Interim transcripts under load: 8 concurrent real-time sessions of held speech through the STT
service, the ModelManager and the bundled models, on a private nats-server.

Each session speaks 4 sentences (the bundled Piper voice, 0.8 s of silence between them) in real
time, then ends. Rounds alternate between sessions whose start event turns partials on and off
(the baseline, same run, same audio). Reported, p50 and p95 over every utterance:
- from speech start (the sentence's first voiced 10 ms, as published) to its first partial;
- from its end (last voiced 10 ms) to its final transcript, partials on against off;
- the finals' WER (jiwer, case and punctuation ignored) with partials on and off.

    .venv/bin/python bench/partials.py [--sessions 8] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from benchkit import cpu_model, pct, temp_dir
from stt_batching import SENTENCES, wer
from voxbus.audio import encode_pcm, pcm_to_float, to_mono, voiced_span
from voxbus.client import ModelClient
from voxbus.config import load_config
from voxbus.ingest import SessionPublisher
from voxbus.messages import AudioFormat, PartialTranscript, Transcript, codec
from voxbus.pipeline import local_pipeline

GAP_S = 0.8
PER_SESSION = 4


@dataclass
class Spoken:
    pcm: bytes
    fmt: AudioFormat
    voiced: list[tuple[float, float]]  # each sentence's first and last voiced moment, session time
    texts: list[str]


@dataclass
class Heard:
    clock0: float = 0.0  # monotonic time of session time 0
    first_partial: dict[int, float] = field(default_factory=dict)
    finals: dict[int, tuple[float, Transcript]] = field(default_factory=dict)
    partials: int = 0


async def speak(client: ModelClient, texts: list[str]) -> Spoken:
    parts, voiced, t, rate = [], [], 0.0, 22050
    for i, text in enumerate(texts):
        pcm, meta = await client.synthesize(text)
        rate = meta.format.rate
        lead = np.zeros(int((0.4 if i == 0 else GAP_S) * rate), np.float32)
        x = to_mono(pcm_to_float(pcm, meta.format))
        t += len(lead) / rate
        a, b = voiced_span(x, rate)
        voiced.append((t + a, t + b))
        t += len(x) / rate
        parts += [lead, x]
    parts.append(np.zeros(int(GAP_S * rate), np.float32))
    fmt = AudioFormat(rate=rate)
    return Spoken(encode_pcm(np.concatenate(parts), fmt), fmt, voiced, texts)


async def session(bus, sid: str, spoken: Spoken, partials: bool) -> Heard:
    heard = Heard()
    done = asyncio.Event()

    async def on_partial(msg) -> None:
        p = codec.decode(msg.data, PartialTranscript)
        heard.partials += 1
        heard.first_partial.setdefault(p.utterance, time.monotonic())

    async def on_final(msg) -> None:
        t = codec.decode(msg.data, Transcript)
        heard.finals[t.utterance] = (time.monotonic(), t)

    async def on_done(msg) -> None:
        done.set()

    def on_frame(n: int, seconds: float) -> None:
        if n == 1:
            heard.clock0 = time.monotonic()

    subs = [await bus.nc.subscribe(bus.subjects.partial(sid), cb=on_partial),
            await bus.nc.subscribe(bus.subjects.transcript(sid), cb=on_final),
            await bus.nc.subscribe(bus.subjects.control(sid, "transcribed"), cb=on_done)]
    try:
        await SessionPublisher(bus, sid, realtime=True, partials=partials, on_frame=on_frame).publish_pcm(
            spoken.pcm, spoken.fmt)
        await asyncio.wait_for(done.wait(), 120)
        await asyncio.sleep(0.2)
    finally:
        for sub in subs:
            await sub.unsubscribe()
    return heard


def by_utterance(spoken: Spoken, heard: Heard) -> list[tuple[float | None, float | None, str]]:
    """(speech start -> first partial, end -> final, final text) per sentence, matched by time."""
    out = []
    finals = sorted(heard.finals.values(), key=lambda ft: ft[1].start)
    for a, b in spoken.voiced:
        mine = [(at, t) for at, t in finals if t.start - 0.5 <= a <= t.end]
        first = [heard.first_partial[t.utterance] - heard.clock0 - a for _, t in mine if t.utterance in heard.first_partial]
        final = max((at for at, _ in mine), default=None)
        out.append((min(first) if first else None, final - heard.clock0 - b if final else None,
                    " ".join(t.text for _, t in mine)))
    return out


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2, help="rounds of each side, alternating")
    ap.add_argument("--in-flight", type=int, default=None, help="stt.partials_in_flight (default: the config's)")
    args = ap.parse_args()
    with temp_dir("voxbus-bench-partials-") as tmp:
        stt = {"partials_in_flight": args.in_flight} if args.in_flight else {}
        config = load_config(env={}, overrides={"manager": {"cache_dir": str(tmp / "cache")}, "stt": stt})
        async with local_pipeline(config, "bench-partials", stt=True) as pipe:
            client = ModelClient.from_bus(pipe.bus)
            await client.load(config.manager.defaults["stt"])
            await client.load(config.manager.defaults["tts"])
            texts = (SENTENCES * 8)[: args.sessions * PER_SESSION * args.rounds]
            spoken = [await speak(client, texts[i * PER_SESSION:(i + 1) * PER_SESSION])
                      for i in range(args.sessions * args.rounds)]
            print(f"{len(spoken)} sessions of {PER_SESSION} sentences each, {args.sessions} at a time "
                  f"({cpu_model()})", file=sys.stderr)
            await session(pipe.bus, "warmup", spoken[0], True)
            results = {True: [], False: []}
            for r in range(args.rounds):
                for on in ((True, False) if r % 2 == 0 else (False, True)):
                    group = spoken[r * args.sessions:(r + 1) * args.sessions]
                    heard = await asyncio.gather(*(session(pipe.bus, f"r{r}-{'on' if on else 'off'}-{i}", sp, on)
                                                   for i, sp in enumerate(group)))
                    results[on] += [(sp, h) for sp, h in zip(group, heard)]
                    print(f"  round {r} partials {'on ' if on else 'off'}: "
                          f"{sum(h.partials for h in heard)} partials", file=sys.stderr)
    return report(results)


def report(results: dict) -> int:
    rows = {on: [row for sp, h in results[on] for row in by_utterance(sp, h)] for on in (True, False)}
    first = [f for f, _, _ in rows[True] if f is not None]
    fin = {on: [d for _, d, _ in rows[on] if d is not None] for on in (True, False)}
    refs = {on: [t for sp, _ in results[on] for t in sp.texts] for on in (True, False)}
    w = {on: wer(refs[on], [text for _, _, text in rows[on]]) for on in (True, False)}
    missing = sum(f is None for f, _, _ in rows[True])
    print(f"{'':<34}{'p50 s':>8}{'p95 s':>8}")
    print(f"{'speech start -> first partial':<34}{statistics.median(first):>8.3f}{pct(first, 95):>8.3f}"
          f"   ({len(first)} utterances, {missing} without a partial)")
    for on in (True, False):
        print(f"{'end -> final, partials ' + ('on' if on else 'off'):<34}{statistics.median(fin[on]):>8.3f}"
              f"{pct(fin[on], 95):>8.3f}   WER {w[on] * 100:.1f} %")
    ratio = statistics.median(fin[True]) / statistics.median(fin[False])
    delta = (w[True] - w[False]) * 100
    met = statistics.median(first) <= 1.0 and ratio <= 1.10 and abs(delta) <= 0.5
    print(f"first partial p50 {statistics.median(first):.3f} s (goal <= 1.0); finals on/off {ratio:.3f} "
          f"(goal <= 1.10); WER delta {delta:+.2f} points (goal within 0.5): {'met' if met else 'missed'}")
    print(json.dumps({"metric": "first_partial_p50", "value": round(statistics.median(first), 3), "unit": "s",
                      "p95": round(pct(first, 95), 3), "final_delay_ratio": round(ratio, 3),
                      "final_p50_on_s": round(statistics.median(fin[True]), 3),
                      "final_p50_off_s": round(statistics.median(fin[False]), 3),
                      "wer_on": round(w[True] * 100, 2), "wer_off": round(w[False] * 100, 2),
                      "wer_delta": round(delta, 2), "utterances": len(rows[True]), "goal_met": bool(met)}))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
