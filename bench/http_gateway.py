"""What the OpenAI-compatible gateway costs: 16 concurrent transcription uploads through
`voxbus http` (POST /v1/audio/transcriptions, multipart WAV) against the same 16 files published
straight onto the bus as sessions (what `voxbus transcribe` does), on one private deployment:
nats-server, the ModelManager with the bundled models, the STT service and the gateway, in this
process. The gateway runs as users run it, `voxbus http` in a process of its own, and each
side's client runs in a process of its own too: the official `openai` client uploading to the
gateway, or voxbus's own publisher (`transcribe_jobs`, what `voxbus transcribe` runs) on a NATS
connection of its own. So both sides pay for their client on the same 2 cores, and the
difference is the gateway's work: HTTP, multipart, and publishing the audio as sessions.

The two sides alternate, round by round; each round's throughput is files per second of wall
time from the first byte sent to the last transcript back. ratio = gateway / direct, medians.

    .venv/bin/python bench/http_gateway.py [--rounds 5] [--files 16]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import re
import signal
import statistics
import sys
import time
from pathlib import Path

import openai
import soundfile as sf

from benchkit import cpu_model, in_process, temp_dir
from stt_batching import SENTENCES
from voxbus.client import ModelClient
from voxbus.config import load_config
from voxbus.ingest import decode_audio
from voxbus.pipeline import local_pipeline
from voxbus.transcribe_job import FileJob, session_id_for, transcribe_jobs


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
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
            async with gateway_process(pipe.bus.url, tmp) as url:
                await gateway_round(url, wavs[:2])  # warm-up: first-inference costs out of the way
                await direct_round(pipe.bus, wavs[:2])
                sides = {"gateway": [], "direct": []}
                for r in range(args.rounds):
                    for side in (("gateway", "direct") if r % 2 == 0 else ("direct", "gateway")):
                        took = await (gateway_round(url, wavs) if side == "gateway" else direct_round(pipe.bus, wavs))
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


@contextlib.asynccontextmanager
async def gateway_process(nats_url: str, tmp: Path):
    """`voxbus http --port 0` on the benchmark's server; yields its URL from its banner."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "voxbus", "http", "--nats", nats_url, "--port", "0", stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "VOXBUS__MANAGER__CACHE_DIR": str(tmp / "cache")})
    try:
        banner = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        found = re.search(r"API at (http://\S+)/v1", banner)
        if not found:
            raise RuntimeError(f"voxbus http did not start: {banner!r}")
        yield found.group(1)
    finally:
        proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(proc.wait(), 30)


def sf_frames(pcm: bytes):
    import numpy as np
    return np.frombuffer(pcm, dtype="<i2")


async def gateway_round(url: str, wavs: list[bytes]) -> float:
    return (await in_process(upload_all, (url, wavs), timeout=600))["seconds"]


def report(conn, run) -> None:
    """In a helper process: the seconds `run()` took, or why it failed, back on `conn`."""
    try:
        conn.send({"seconds": asyncio.run(run())})
    except Exception as exc:
        conn.send({"error": repr(exc)})


def upload_all(url: str, wavs: list[bytes], conn) -> None:
    """In the helper process: every upload at once through the openai client; the time they took."""
    async def run() -> float:
        api = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=600)
        start = time.perf_counter()
        got = await asyncio.gather(*(api.audio.transcriptions.create(model="whisper-1", file=(f"f{i}.wav", w))
                                     for i, w in enumerate(wavs)))
        took = time.perf_counter() - start
        if not all(g.text for g in got):
            raise RuntimeError("an upload came back without text")
        return took

    report(conn, run)


async def direct_round(bus, wavs: list[bytes]) -> float:
    return (await in_process(publish_all, (bus.url, wavs), timeout=600))["seconds"]


def publish_all(nats_url: str, wavs: list[bytes], conn) -> None:
    """In the helper process: every file published as a session at once; the time until all are
    transcribed (decoding included, as the gateway decodes uploads)."""
    from voxbus.bus import open_bus

    async def run() -> float:
        config = load_config(env={}, overrides={"nats": {"url": nats_url}})
        async with open_bus(config, name="bench-direct", embed=False) as bus:
            start = time.perf_counter()
            jobs = []
            for i, w in enumerate(wavs):
                pcm, fmt = decode_audio(io.BytesIO(w), f"f{i}.wav")
                jobs.append(FileJob(Path(f"f{i}.wav"), session_id_for(Path(f"f{i}.wav")), pcm, fmt,
                                    fmt.duration(len(pcm))))
            await transcribe_jobs(bus, jobs)
            took = time.perf_counter() - start
        if not all(j.text for j in jobs):
            raise RuntimeError("a session came back without text")
        return took

    report(conn, run)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
