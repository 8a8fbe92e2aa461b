#!/usr/bin/env python
"""Cross-session STT batching: throughput of concurrent transcribe requests through the
ModelManager versus faster-whisper's own WhisperModel.transcribe, one by one, on the same audio.

32 short Piper-synthesized sentences (0.6-3 s, one per "session", made through the manager's own
synthesize at 16 kHz s16le) are sent 8 and 16 at a time, concurrently, through the ModelClient to a
real ModelManager (default config: batching on, bundled whisper tiny.en int8) on a private
embedded nats-server. The baseline loads the same model files with faster-whisper in the same
process (same compute type, greedy like the manager) and transcribes the same audio one by one.
Rounds are interleaved (baseline, 8, 16, baseline, ...) so a noisy neighbour hurts all alike; the
median round is reported. Word error rate is over all sentences, per side.

    .venv/bin/python bench/stt_batching.py [--rounds 5] [--pad-seconds 10]    # about 2 minutes on 2 cores

The last line printed is JSON: {"metric", "value", "unit", "baseline", "ratio", ...}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import jiwer
import numpy as np
import psutil
from faster_whisper import WhisperModel

from voxbus.audio import pcm_to_model_input
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


class NeighbourCpu:
    """Share of the machine's CPU used by other processes (not this one, not its nats-server)
    while measuring: a busy neighbour slows both sides, but not always alike."""

    def __enter__(self) -> "NeighbourCpu":
        self.start = self._reading()
        return self

    def __exit__(self, *exc) -> None:
        self.end = self._reading()

    @staticmethod
    def _reading() -> tuple[float, float, float]:
        t = psutil.cpu_times()
        busy = t.user + t.nice + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0) + getattr(t, "steal", 0)
        me = psutil.Process()
        ours = sum(p.cpu_times().user + p.cpu_times().system for p in [me, *me.children(recursive=True)])
        return time.monotonic(), busy, ours

    @property
    def percent(self) -> float:
        wall = (self.end[0] - self.start[0]) * psutil.cpu_count()
        others = (self.end[1] - self.start[1]) - (self.end[2] - self.start[2])
        return max(0.0, 100 * others / wall)


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


async def burst(client: ModelClient, pcms: list[bytes]) -> tuple[float, list]:
    """All at once, each as its own session; (seconds until the last reply, replies)."""
    start = time.perf_counter()
    replies = await asyncio.gather(*(client.transcribe(p, FMT, session=f"s{i}") for i, p in enumerate(pcms)))
    return time.perf_counter() - start, replies


def one_by_one(model: WhisperModel, audios: list[np.ndarray]) -> tuple[float, list[str]]:
    start = time.perf_counter()
    texts = []
    for audio in audios:
        segments, _ = model.transcribe(audio, beam_size=1, vad_filter=False, condition_on_previous_text=False)
        texts.append(" ".join(s.text.strip() for s in segments))
    return time.perf_counter() - start, texts


async def measure(client: ModelClient, baseline: WhisperModel, pcms: list[bytes], audios: list[np.ndarray],
                  rounds: int) -> tuple[dict, dict, dict]:
    """Interleaved rounds: (utt/s per side and round, last texts per side, batch sizes seen)."""
    times: dict[str, list[float]] = {"baseline": [], "8": [], "16": []}
    texts: dict[str, list[str]] = {}
    sizes: dict[str, set[int]] = {"8": set(), "16": set()}
    for r in range(rounds):
        dt, texts["baseline"] = one_by_one(baseline, audios)
        times["baseline"].append(len(audios) / dt)
        for n in (8, 16):
            total, got = 0.0, []
            for at in range(0, len(pcms), n):  # all utterances, in bursts of n
                dt, replies = await burst(client, pcms[at:at + n])
                total += dt
                got += replies
            times[str(n)].append(len(pcms) / total)
            texts[str(n)] = [g.text for g in got]
            sizes[str(n)] |= {g.batch_size for g in got}
        print(f"round {r + 1}: " + ", ".join(f"{k}: {v[-1]:.2f} utt/s" for k, v in times.items()), flush=True)
    return times, texts, sizes


async def main(rounds: int, pad_seconds: float | None) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="voxbus-bench-stt-"))
    config = load_config(env={}, overrides={
        "nats": {"embedded": {"port": 0, "monitor_port": 0, "store_dir": str(tmp / "js")}},
        "manager": {"cache_dir": str(tmp / "cache")},
        "batching": {} if pad_seconds is None else {"pad_seconds": pad_seconds}})
    b = config.batching
    print(f"machine: {psutil.cpu_count()} cores, {cpu_model()}; busy before start: {psutil.cpu_percent(1.0):.0f}%")
    print(f"batching: enabled={b.enabled} max_batch={b.max_batch} max_wait_ms={b.max_wait_ms:g} "
          f"pad_seconds={b.pad_seconds:g}")
    try:
        async with open_bus(config, name="bench-manager") as mbus, ModelManager(mbus, manager_id="bench") as manager:
            client_config = load_config(env={}, overrides={"nats": {"url": mbus.server.url}})
            async with open_bus(client_config, name="bench-client", embed=False) as cbus:
                client = ModelClient.from_bus(cbus)
                pcms = [(await client.synthesize(s, format=FMT))[0] for s in SENTENCES]
                audios = [pcm_to_model_input(p, FMT, 16000) for p in pcms]
                lengths = [len(a) / 16000 for a in audios]
                print(f"{len(pcms)} utterances of {min(lengths):.2f}-{max(lengths):.2f} s")
                await client.transcribe(pcms[0], FMT)  # loads whisper in the manager
                slot = manager.pool.slots[config.manager.defaults["stt"]]
                path = sources.resolve(slot.spec.source, tmp / "cache").path  # the manager's own model files
                baseline = WhisperModel(str(path), device="cpu", compute_type=slot.quantization or "default",
                                        cpu_threads=config.manager.threads or 0, local_files_only=True)
                one_by_one(baseline, audios[:2])  # warm up both sides
                await burst(client, pcms[:2])
                with NeighbourCpu() as neighbours:
                    times, texts, sizes = await measure(client, baseline, pcms, audios, rounds)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    errs = {k: round(100 * wer(SENTENCES, t), 2) for k, t in texts.items()}
    print(f"faster-whisper WhisperModel.transcribe one by one: {med['baseline']:.2f} utt/s, "
          f"WER {errs['baseline']:.1f}%")
    for n in ("8", "16"):
        print(f"manager, {n} concurrent: {med[n]:.2f} utt/s ({med[n] / med['baseline']:.2f}x), WER {errs[n]:.1f}%, "
              f"batch sizes seen {sorted(sizes[n])}")
    print(f"other processes used {neighbours.percent:.0f}% of the machine's CPU meanwhile")
    ratio = round(med["16"] / med["baseline"], 2)
    return {"metric": "stt_batch_throughput_ratio_16", "value": ratio, "unit": "x",
            "baseline": round(med["baseline"], 2), "ratio": ratio, "batched_16": round(med["16"], 2),
            "batched_8": round(med["8"], 2), "ratio_8": round(med["8"] / med["baseline"], 2),
            "wer_baseline": errs["baseline"], "wer_16": errs["16"], "wer_8": errs["8"],
            "pad_seconds": config.batching.pad_seconds, "utterances": len(SENTENCES), "rounds": rounds,
            "neighbour_cpu_pct": round(neighbours.percent, 1),
            "cpu": cpu_model(), "cores": psutil.cpu_count()}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pad-seconds", type=float, help="override batching.pad_seconds (default: the config's)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print(json.dumps(asyncio.run(main(args.rounds, args.pad_seconds))))
