"""What the worker process hop costs per request, against the same backend called in-process.

For each bundled model, one backend object is loaded in this process and one worker process is
started with the same model (as the ModelManager starts them). Then the same requests alternate
between the two, `--rounds` times each: transcribe 1 s of speech (the batched path a lone
utterance takes), synthesize one short sentence, generate 1 token. The in-process baseline runs
the backend on a worker thread through the event loop, exactly as the manager did before models
moved into their own processes; the hop adds the socket round trip, msgpack framing and, for
audio, the copy through the socket. Prints p50/p95 of both and the added p50, and the headline
(the largest of the three p50 additions, goal < 2 ms) as JSON on the last line.

    .venv/bin/python bench/worker_overhead.py [--rounds 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from benchkit import pct, temp_dir
from voxbus.audio import resample
from voxbus.config import load_config
from voxbus.manager import sources
from voxbus.manager import worker_protocol as wp
from voxbus.manager.backends import backend_class
from voxbus.manager.backends.base import LoadSpec
from voxbus.manager.quantization import resolve_quantization
from voxbus.manager.worker import ModelWorker

SENTENCE = "The quick brown fox jumps over the lazy dog."


def load_message(model_id: str, cache: Path) -> wp.Load:
    spec = load_config(env={}).models[model_id]
    src = sources.resolve(spec.source, cache)
    return wp.Load(backend=spec.backend, model_id=model_id, path=str(src.path),
                   config_path=str(src.config_path) if src.config_path else None,
                   quantization=resolve_quantization(spec.backend, spec.quantization, "cpu"), device="cpu",
                   options=dict(spec.options), fingerprint=sources.fingerprint(src, cache), cache_dir=str(cache))


def in_process(load: wp.Load):
    backend = backend_class(load.backend)()
    backend.load(LoadSpec(model_id=load.model_id, path=Path(load.path),
                          config_path=Path(load.config_path) if load.config_path else None,
                          quantization=load.quantization, options=dict(load.options), fingerprint=load.fingerprint,
                          cache_dir=Path(load.cache_dir)))
    return backend


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=100)
    args = ap.parse_args()
    with temp_dir("voxbus-bench-hop-") as cache:
        return await measure(args, cache)


async def measure(args, cache: Path) -> int:
    loop = asyncio.get_running_loop()
    thread = ThreadPoolExecutor(max_workers=1)
    cases = {}
    workers = []
    try:
        for model_id in ("piper-joe", "whisper-tiny-en", "gemma3-270m"):
            load = load_message(model_id, cache)
            backend = await loop.run_in_executor(thread, in_process, load)
            worker = ModelWorker(model_id, 0, watchdog=600, on_exit=lambda w, e: None)
            await worker.start(load, 600)
            workers.append(worker)
            cases[model_id] = (backend, worker)

        piper, _ = cases["piper-joe"]
        spoken = piper.synthesize(SENTENCE, None, {})
        one_second = resample(spoken.audio, spoken.sample_rate, 16000)[:16000].astype(np.float32)
        opts = {"beam_size": 1, "pad_seconds": 10.0}
        gen = {"max_tokens": 1, "temperature": 0.0}
        calls = {
            "transcribe 1 s": ("whisper-tiny-en",
                               lambda b: b.transcribe_batch([one_second], None, opts),
                               lambda: wp.Transcribe(job=0, audios=[one_second.tobytes()], options=opts, batch=True)),
            "synthesize a sentence": ("piper-joe", lambda b: b.synthesize(SENTENCE, None, {}),
                                      lambda: wp.Synthesize(job=0, text=SENTENCE)),
            "generate 1 token": ("gemma3-270m", lambda b: b.generate("Hello", None, gen, lambda t: None, lambda: False),
                                 lambda: wp.Generate(job=0, prompt="Hello", options=gen)),
        }
        # The hop alone: a job the worker refuses at once (no model work), against a thread hop.
        bare: list[float] = []
        for _ in range(200):
            t = time.perf_counter()
            try:
                await cases["piper-joe"][1].run(wp.Synthesize(job=0, text=" "))
            except Exception:
                pass
            bare.append((time.perf_counter() - t) * 1000)
        thread_hop = []
        for _ in range(200):
            t = time.perf_counter()
            await loop.run_in_executor(thread, lambda: None)
            thread_hop.append((time.perf_counter() - t) * 1000)
        results = {}
        for name, (model_id, direct, job) in calls.items():
            backend, worker = cases[model_id]
            for _ in range(3):  # warm both
                await loop.run_in_executor(thread, direct, backend)
                await worker.run(job())
            base, hop = [], []
            for i in range(args.rounds):
                for arm in ((0, 1) if i % 2 else (1, 0)):  # alternate which side goes first
                    t = time.perf_counter()
                    if arm == 0:
                        await loop.run_in_executor(thread, direct, backend)
                        base.append((time.perf_counter() - t) * 1000)
                    else:
                        await worker.run(job(), on_text=lambda s: None)
                        hop.append((time.perf_counter() - t) * 1000)
            added = statistics.median(hop) - statistics.median(base)
            results[name] = (base, hop, added)
    finally:
        for worker in workers:
            await worker.stop(10)
        thread.shutdown()
    print(f"{'request':<24} {'in-process p50':>15} {'p95':>8} {'worker p50':>11} {'p95':>8} {'added p50':>10}")
    for name, (base, hop, added) in results.items():
        print(f"{name:<24} {statistics.median(base):>13.2f}ms {pct(base, 95):>6.2f}ms {statistics.median(hop):>9.2f}ms "
              f"{pct(hop, 95):>6.2f}ms {added:>8.2f}ms")
    print(f"{'round trip, no model work':<24} {statistics.median(thread_hop):>13.3f}ms {pct(thread_hop, 95):>6.3f}ms "
          f"{statistics.median(bare):>9.3f}ms {pct(bare, 95):>6.3f}ms "
          f"{statistics.median(bare) - statistics.median(thread_hop):>8.3f}ms")
    worst = max(results, key=lambda n: results[n][2])
    value = results[worst][2]
    print(f"largest p50 addition: {value:.2f} ms ({worst}); goal < 2 ms")
    print(json.dumps({"metric": "worker_hop_added_p50", "value": round(value, 3), "unit": "ms", "worst": worst,
                      "rounds": args.rounds, "bare_round_trip_ms": round(statistics.median(bare), 3),
                      **{f"added_p50_ms[{n}]": round(r[2], 3) for n, r in results.items()},
                      **{f"baseline_p50_ms[{n}]": round(statistics.median(r[0]), 2) for n, r in results.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
