"""What the OpenAI-compatible gateway costs: 16 concurrent transcription uploads through
`voxbus http` (POST /v1/audio/transcriptions, multipart WAV, through the official `openai`
client) against the same 16 files published straight onto the bus as sessions (what
`voxbus transcribe` does), on one private deployment: nats-server, the ModelManager with the
bundled models, the STT service and the gateway, all in this process.

The two sides alternate, round by round; each round's throughput is files per second of wall
time from the first byte sent to the last transcript back. ratio = gateway / direct, medians.

    .venv/bin/python bench/http_gateway.py [--rounds 3] [--files 16]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import statistics
import sys
import time
from pathlib import Path

import openai
import soundfile as sf

from benchkit import cpu_model, temp_dir
from stt_batching import SENTENCES
from voxbus.client import ModelClient
from voxbus.config import load_config
from voxbus.gateways.http_app import serving
from voxbus.ingest import decode_audio
from voxbus.pipeline import local_pipeline
from voxbus.transcribe_job import FileJob, session_id_for, transcribe_jobs


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--files", type=int, default=16)
    args = ap.parse_args()
    with temp_dir("voxbus-bench-http-") as tmp:
        config = load_config(env={}, overrides={"manager": {"cache_dir": str(tmp / "cache")}})
        async with local_pipeline(config, "bench-http", stt=True) as pipe:
            client = ModelClient.from_bus(pipe.bus)
            await client.load(config.manager.defaults["stt"])
            wavs = []
            for i in range(args.files):  # two sentences per file: two utterances each
                texts = [SENTENCES[(2 * i) % len(SENTENCES)], SENTENCES[(2 * i + 1) % len(SENTENCES)]]
                pcm, meta = await client.synthesize("  ".join(texts))
                out = io.BytesIO()
                sf.write(out, sf_frames(pcm), meta.format.rate, format="WAV", subtype="PCM_16")
                wavs.append(out.getvalue())
            async with serving(pipe.bus, "127.0.0.1", 0) as url:
                api = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=600)
                await gateway_round(api, wavs[:2])  # warm-up: first-inference costs out of the way
                sides = {"gateway": [], "direct": []}
                for r in range(args.rounds):
                    for side in (("gateway", "direct") if r % 2 == 0 else ("direct", "gateway")):
                        took = await (gateway_round(api, wavs) if side == "gateway" else direct_round(pipe.bus, wavs))
                        sides[side].append(len(wavs) / took)
                        print(f"  round {r} {side:<8} {len(wavs)} files in {took:.2f} s: {len(wavs) / took:.2f} files/s",
                              file=sys.stderr)
    g, d = statistics.median(sides["gateway"]), statistics.median(sides["direct"])
    ratio = g / d
    print(f"{args.files} concurrent uploads ({cpu_model()}): gateway {g:.2f} files/s, direct {d:.2f} files/s; "
          f"ratio {ratio:.3f} (goal > 0.90: {'met' if ratio > 0.9 else 'missed'})")
    print(json.dumps({"metric": "http_gateway_throughput_ratio", "value": round(ratio, 3), "unit": "x",
                      "ratio": round(ratio, 3), "gateway_files_per_s": round(g, 3), "direct_files_per_s": round(d, 3),
                      "files": args.files, "rounds": args.rounds}))
    return 0


def sf_frames(pcm: bytes):
    import numpy as np
    return np.frombuffer(pcm, dtype="<i2")


async def gateway_round(api, wavs: list[bytes]) -> float:
    start = time.perf_counter()
    got = await asyncio.gather(*(api.audio.transcriptions.create(model="whisper-1", file=(f"f{i}.wav", w))
                                 for i, w in enumerate(wavs)))
    assert all(g.text for g in got)
    return time.perf_counter() - start


async def direct_round(bus, wavs: list[bytes]) -> float:
    start = time.perf_counter()
    jobs = []
    for i, w in enumerate(wavs):  # (decoding is part of the work on both sides)
        pcm, fmt = decode_audio(io.BytesIO(w), f"f{i}.wav")
        jobs.append(FileJob(Path(f"f{i}.wav"), session_id_for(Path(f"f{i}.wav")), pcm, fmt, fmt.duration(len(pcm))))
    await transcribe_jobs(bus, jobs)
    assert all(j.text for j in jobs)
    return time.perf_counter() - start


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
