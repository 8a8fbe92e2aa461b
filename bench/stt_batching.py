#!/usr/bin/env python
"""Cross-session STT batching: throughput and word error rate of concurrent transcribe requests
through the ModelManager, against faster-whisper's own WhisperModel.transcribe one by one, on the
same audio, in three voices.

The 32 short sentences below (0.6-3 s each, one per "session") are spoken by the bundled Piper
voice (through the manager's own synthesize) and, where the Debian packages are installed, by
espeak-ng and flite, all at 16 kHz s16le. Each round, interleaved so a noisy neighbour hurts all
alike, measures:

- `fw beam 1`: faster-whisper's transcribe, one utterance after another, greedy (the manager's
  decoding), on the manager's own model files, compute type and threads;
- `fw beam 5`: the same with beam 5 (what wyoming-faster-whisper runs), the accuracy reference;
- `mgr no batch`: a second manager with `batching.max_batch: 1`, 16 requests at once: the shorter
  padding alone, so each optimisation's share shows;
- `mgr 8`, `mgr 16`: the default manager (batching on), 8 and 16 requests at once.

Reported: the median round's utterances per second, and WER per voice (jiwer, case and punctuation
ignored). Goals: the batched manager at >= 4x faster-whisper's throughput, with a WER within 0.5
point of faster-whisper's beam 5 on the same audio.

    .venv/bin/python bench/stt_batching.py [--rounds 3] [--pad-seconds 10]    # about 6 minutes on 2 cores

The last line printed is JSON: {"metric", "value", "unit", "baseline", "ratio", ...}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shutil
import statistics
import subprocess
import time
from pathlib import Path

import jiwer
import numpy as np
import psutil
from faster_whisper import WhisperModel

from benchkit import CpuWatch, cpu_model, temp_dir
from voxbus.audio import compact_pcm, pcm_to_model_input
from voxbus.ingest import read_audio
from voxbus.bus import open_bus
from voxbus.client import ModelClient
from voxbus.config import load_config
from voxbus.manager import ModelManager, sources
from voxbus.messages import AudioFormat

SENTENCES = [
    "Please turn on the lights in the kitchen.", "What is the weather going to be like tomorrow?",
    "Play some relaxing music in the living room.", "The library closes early on Sundays.",
    "Can you read me the latest news headlines?", "My favorite color is green.",
    "Send a message to Alice saying I am running late.", "The children are playing in the garden.",
    "We need to buy bread, eggs and apples.", "Turn the volume down a little, please.",
    "She sold her old bicycle last week.", "The river flows quietly through the valley.",
    "Good morning, how did you sleep?", "Thank you very much.", "Where are my keys?",
    "Open the garage door.", "Pause the movie.", "Louder, please.", "Is it going to snow?",
    "Show me the shopping list.", "The parcel arrived this afternoon.", "Dim the lights in the dining room.",
    "What did I miss during the meeting?", "Put milk and butter on the list.", "Who wrote this song?",
    "I can't find my glasses anywhere.", "The cat is sleeping on the sofa.", "Please repeat the last sentence.",
    "My neighbor is painting his fence blue.", "That was a wonderful dinner.", "Find a quiet cafe near the station.",
    "Why is the sky blue?",
]
FMT = AudioFormat(rate=16000, channels=1, sample="s16le")


_WORDS = jiwer.Compose([jiwer.ToLowerCase(), jiwer.SubstituteRegexes({r"[^a-z0-9' ]+": " "}),
                        jiwer.RemoveMultipleSpaces(), jiwer.Strip(), jiwer.ReduceToListOfListOfWords()])


def wer(references: list[str], hypotheses: list[str]) -> float:
    """Corpus word error rate (jiwer): case and punctuation do not count."""
    hyps = [h if any(c.isalnum() for c in h) else "<nothing>" for h in hypotheses]
    return jiwer.wer(references, hyps, reference_transform=_WORDS, hypothesis_transform=_WORDS)


VOICES = {  # Debian's command-line synthesizers: how each writes `text` to the WAV file `out`
    "espeak-ng": lambda text, out: ["espeak-ng", "-w", out, text],
    "flite": lambda text, out: ["flite", "-t", text, "-o", out],
}


def external_voice(name: str, text: str, out: Path) -> bytes | None:
    """16 kHz s16le speech from a command-line synthesizer (None where it is not installed)."""
    if shutil.which(name) is None:
        return None
    subprocess.run(VOICES[name](text, str(out)), check=True, capture_output=True)
    return compact_pcm(*read_audio(out))[0]


async def speak_all(client: ModelClient, tmp: Path) -> dict[str, list[bytes]]:
    voices = {"piper": [(await client.synthesize(s, format=FMT))[0] for s in SENTENCES]}
    for name in VOICES:
        pcms = [external_voice(name, text, tmp / f"{name}-{i}.wav") for i, text in enumerate(SENTENCES)]
        if all(p is not None for p in pcms):
            voices[name] = pcms
        else:
            print(f"({name} is not installed: `apt-get install {name}` adds its voice)")
    return voices


async def burst(client: ModelClient, pcms: list[bytes]) -> tuple[float, list]:
    """All at once, each as its own session; (seconds until the last reply, replies)."""
    start = time.perf_counter()
    replies = await asyncio.gather(*(client.transcribe(p, FMT, session=f"s{i}") for i, p in enumerate(pcms)))
    return time.perf_counter() - start, replies


def one_by_one(model: WhisperModel, audios: list[np.ndarray], beam: int = 1) -> tuple[float, list[str]]:
    start = time.perf_counter()
    texts = []
    for audio in audios:
        segments, _ = model.transcribe(audio, beam_size=beam, vad_filter=False, condition_on_previous_text=False)
        texts.append(" ".join(s.text.strip() for s in segments))
    return time.perf_counter() - start, texts


SIDES = ("fw beam 1", "fw beam 5", "mgr no batch", "mgr 8", "mgr 16")


async def through(client: ModelClient, pcms: list[bytes], n: int) -> tuple[float, list]:
    """All utterances through the manager, n at a time: (seconds, replies)."""
    total, got = 0.0, []
    for at in range(0, len(pcms), n):
        dt, replies = await burst(client, pcms[at:at + n])
        total += dt
        got += replies
    return total, got


async def measure(batched: ModelClient, unbatched: ModelClient, baseline: WhisperModel, pcms: list[bytes],
                  audios: list[np.ndarray], rounds: int) -> tuple[dict, dict, dict]:
    """Interleaved rounds: (utt/s per side and round, last texts per side, batch sizes seen)."""
    times: dict[str, list[float]] = {k: [] for k in SIDES}
    texts: dict[str, list[str]] = {}
    sizes: dict[str, set[int]] = {k: set() for k in SIDES}
    for r in range(rounds):
        for side in SIDES:
            if side.startswith("fw"):
                dt, texts[side] = one_by_one(baseline, audios, beam=int(side[-1]))
            else:
                client, n = (unbatched, 16) if side == "mgr no batch" else (batched, int(side.split()[-1]))
                dt, replies = await through(client, pcms, n)
                texts[side] = [g.text for g in replies]
                sizes[side] |= {g.batch_size for g in replies}
            times[side].append(len(audios) / dt)
        print(f"round {r + 1}: " + ", ".join(f"{k}: {v[-1]:.2f} utt/s" for k, v in times.items()), flush=True)
    return times, texts, sizes


async def main(rounds: int, pad_seconds: float | None) -> dict:
    with temp_dir("voxbus-bench-stt-") as tmp:
        return await run(rounds, pad_seconds, tmp)


async def run(rounds: int, pad_seconds: float | None, tmp: Path) -> dict:
    batching = {} if pad_seconds is None else {"pad_seconds": pad_seconds}
    config = load_config(env={}, overrides={
        "nats": {"embedded": {"port": 0, "monitor_port": 0, "store_dir": str(tmp / "js")}},
        "manager": {"cache_dir": str(tmp / "cache")}, "batching": batching})
    b = config.batching
    print(f"machine: {psutil.cpu_count()} cores, {cpu_model()}; busy before start: {psutil.cpu_percent(1.0):.0f}%")
    print(f"batching: enabled={b.enabled} max_batch={b.max_batch} max_wait_ms={b.max_wait_ms:g} "
          f"pad_seconds={b.pad_seconds:g}")
    async with open_bus(config, name="bench-manager") as mbus, ModelManager(mbus, manager_id="bench") as manager:
        url = mbus.server.url
        solo = load_config(env={}, overrides={"nats": {"url": url, "prefix": "nobatch"},
                                              "manager": {"cache_dir": str(tmp / "cache")},
                                              "batching": {**batching, "max_batch": 1}})
        async with open_bus(solo, name="bench-solo") as sbus, ModelManager(sbus, manager_id="bench-solo"), \
                open_bus(load_config(env={}, overrides={"nats": {"url": url}}), name="bench-client", embed=False) as cbus:
            client, unbatched = ModelClient.from_bus(cbus), ModelClient.from_bus(sbus)
            voices = await speak_all(client, tmp)
            pcms = [p for v in voices.values() for p in v]
            audios = [pcm_to_model_input(p, FMT, 16000) for p in pcms]
            lengths = [len(a) / 16000 for a in audios]
            print(f"{len(pcms)} utterances ({', '.join(voices)}) of {min(lengths):.2f}-{max(lengths):.2f} s")
            await client.transcribe(pcms[0], FMT)  # loads whisper in both managers
            await unbatched.transcribe(pcms[0], FMT)
            slot = manager.pool.slots[config.manager.defaults["stt"]]
            path = sources.resolve(slot.spec.source, tmp / "cache").path  # the manager's own model files
            baseline = WhisperModel(str(path), device="cpu", compute_type=slot.quantization or "default",
                                    cpu_threads=config.manager.threads or 0, local_files_only=True)
            one_by_one(baseline, audios[:2])  # warm up every side
            await burst(client, pcms[:2])
            await burst(unbatched, pcms[:2])
            with CpuWatch([mbus.server.pid]) as neighbours:
                times, texts, sizes = await measure(client, unbatched, baseline, pcms, audios, rounds)
    med = {k: statistics.median(v) for k, v in times.items()}
    refs = [s for _ in voices for s in SENTENCES]
    errs: dict[str, dict[str, float]] = {}
    for side, got in texts.items():
        errs[side] = {"all": round(100 * wer(refs, got), 2)}
        for i, name in enumerate(voices):
            errs[side][name] = round(100 * wer(SENTENCES, got[i * len(SENTENCES):(i + 1) * len(SENTENCES)]), 2)
    print(f"{'side':<14} {'utt/s':>7} {'x fw b1':>8} {'x fw b5':>8}   WER % " + " / ".join(["all", *voices]))
    for side in SIDES:
        print(f"{side:<14} {med[side]:>7.2f} {med[side] / med['fw beam 1']:>7.2f}x {med[side] / med['fw beam 5']:>7.2f}x   "
              + " / ".join(f"{v:.1f}" for v in errs[side].values())
              + (f"   batch sizes {sorted(sizes[side])}" if side.startswith("mgr") else ""))
    for side in ("mgr 16",):
        for i, (ref, got) in enumerate(zip(refs, texts[side])):
            if wer([ref], [got]) > 0.5:
                print(f"  {side} far off on {list(voices)[i // len(SENTENCES)]} #{i % len(SENTENCES)}: {ref!r} -> {got!r}")
    print(f"{neighbours.note()}")
    ratio = round(med["mgr 16"] / med["fw beam 1"], 2)
    goal_wer = errs["mgr 16"]["all"] <= errs["fw beam 5"]["all"] + 0.5
    print(f"goals: mgr 16 at {ratio}x fw beam 1 and {med['mgr 16'] / med['fw beam 5']:.2f}x fw beam 5 (>= 4x); "
          f"WER {errs['mgr 16']['all']:.2f} % vs fw beam 5 {errs['fw beam 5']['all']:.2f} % (+0.5 at most): "
          f"{'MET' if goal_wer else 'MISSED'}")
    return {"metric": "stt_batch_throughput_ratio_16", "value": ratio, "unit": "x",
            "baseline": round(med["fw beam 1"], 2), "ratio": ratio,
            "ratio_vs_beam5": round(med["mgr 16"] / med["fw beam 5"], 2),
            "ratio_no_batch": round(med["mgr no batch"] / med["fw beam 1"], 2),
            "utt_per_s": {k: round(v, 2) for k, v in med.items()}, "wer_pct": errs, "wer_goal_met": goal_wer,
            "voices": list(voices), "pad_seconds": b.pad_seconds, "utterances": len(pcms), "rounds": rounds,
            "neighbour_cores": round(neighbours.others, 2), "cpu": cpu_model(), "cores": psutil.cpu_count()}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pad-seconds", type=float, help="override batching.pad_seconds (default: the config's)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print(json.dumps(asyncio.run(main(args.rounds, args.pad_seconds))))
