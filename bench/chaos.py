#!/usr/bin/env python
"""Chaos run: live sessions through a private voxbus deployment while it suffers every fault
voxbus claims to handle; afterwards every session is audited for silent loss and duplicates.

The deployment is real processes (bench/chaos_deploy.py): the embedded nats-server, `voxbus
manager` (Whisper tiny and Piper, preloaded), `voxbus stt`, and one `voxbus publish --realtime`
per session. Speech is the bundled Piper voice, synthesized through the manager; each session
speaks the sentences from its own starting point.

1. Baseline: every session's audio is first published once without faults (as fast as it goes),
   and its transcripts are kept: which frames each utterance covers.
2. Chaos: the same audio is published live (real time, concurrently) while, on a fixed schedule,
   the STT service is SIGKILLed 3 times, the manager is SIGKILLed, nats-server is restarted on its
   port and store, the manager is SIGSTOPped for 20 s, the STT's durable consumer is deleted, and
   a foreign client fills what the store has left. Killed processes are started again at once.
3. Audit (bench/chaos_audit.py): frames stored against sent, each baseline utterance covered
   exactly once, one `transcribed` event, and an error event or publisher report for any loss.

    .venv/bin/python bench/chaos.py                 # 8 sessions of 96 s, about 5 minutes
    .venv/bin/python bench/chaos.py --short         # 3 sessions of 36 s, 5 s SIGSTOP (the suite's)
    .venv/bin/python bench/chaos.py --keep          # keep the deployment's logs and store

Prints a table per session and, last, one JSON line: lost_silently, duplicated, faults (what was
injected), and the baseline utterance count with the share the chaos run covered (ratio). Exits 1
when anything was lost silently or duplicated.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from benchkit import cpu_model
from chaos_audit import Published, SessionAudit, audit, table, transcripts_of
from chaos_deploy import (Deployment, delete_consumer, fill_foreign_stream, kill_manager, kill_stt,
                          restart_server, stop_manager)
from voxbus.audio import pcm_to_float, to_mono
from voxbus.bus import open_bus
from voxbus.client import ModelClient
from voxbus.config import load_config
from voxbus.history import stored
from voxbus.server import die_with_parent
from voxbus.subjects import Subjects

RATE, FRAME_MS = 16000, 20
SENTENCES = [
    "Good morning and welcome to the weekly meeting.",
    "First we look at the budget for next year.",
    "Then we talk about the new office downtown.",
    "Please send the report before Friday afternoon.",
    "The train to the airport leaves every twenty minutes.",
    "We will meet again at the station at seven tonight.",
]
GAP_S = 0.9
FULL = {"sessions": 8, "seconds": 96, "stop_s": 20.0,
        "schedule": [(4, "kill_stt"), (12, "kill_stt"), (20, "kill_stt"), (28, "kill_manager"),
                     (38, "restart_server"), (48, "stop_manager"), (74, "delete_consumer"), (80, "fill_foreign")]}
SHORT = {"sessions": 3, "seconds": 36, "stop_s": 5.0,
         "schedule": [(3, "kill_stt"), (8, "kill_manager"), (13, "restart_server"), (18, "stop_manager"),
                      (26, "delete_consumer"), (29, "fill_foreign")]}
SESSION_IDLE_S = 20.0
"""stt.session_idle here: how long an ended session waits for frames its end event named."""


def say(text: str) -> None:
    print(text, flush=True)


async def synthesize(bus, timeout: float = 300.0) -> list[np.ndarray]:
    """Each sentence in the Piper voice at 16 kHz, once the (restartable) manager answers."""
    client, end = ModelClient.from_bus(bus), time.monotonic() + timeout
    voices = []
    for text in SENTENCES:
        while True:
            try:
                pcm, meta = await client.synthesize(text)
                break
            except Exception:
                if time.monotonic() > end:
                    raise
                await asyncio.sleep(1.0)
        audio = to_mono(pcm_to_float(pcm, meta.format))
        voices.append(soxr.resample(audio, meta.format.rate, RATE).astype(np.float32))
    return voices


def session_audio(voices: list[np.ndarray], start: int, seconds: float, path: Path) -> int:
    """Sentences from `start` on, looping, with pauses, to `seconds`; returns its frame count."""
    parts, n, i = [np.zeros(int(0.4 * RATE), np.float32)], int(0.4 * RATE), start
    gap = np.zeros(int(GAP_S * RATE), np.float32)
    while n < seconds * RATE:
        v = voices[i % len(voices)]
        parts += [v, gap]
        n, i = n + len(v) + len(gap), i + 1
    sf.write(str(path), np.concatenate(parts), RATE, subtype="PCM_16")
    return math.ceil(n / (RATE * FRAME_MS // 1000))


async def publish_all(dep: Deployment, wavs: dict[str, Path], frames: dict[str, int], *, realtime: bool,
                      timeout: float) -> list[Published]:
    procs = {}
    for sid, wav in wavs.items():
        argv = dep.voxbus("publish", str(wav), "--session", sid, *(["--realtime"] if realtime else []))
        procs[sid] = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                          stderr=asyncio.subprocess.PIPE, preexec_fn=die_with_parent)
    results = []
    for sid, p in procs.items():
        try:
            _, err = await asyncio.wait_for(p.communicate(), timeout)
        except asyncio.TimeoutError:
            p.kill()
            _, err = await p.communicate()
        results.append(Published(sid, frames[sid], p.returncode, err.decode(errors="replace")))
    return results


async def wait_transcribed(bus, sids: list[str], timeout: float) -> set[str]:
    s, done, end = bus.subjects, set(), time.monotonic() + timeout
    while time.monotonic() < end and len(done) < len(sids):
        for sid in set(sids) - done:
            try:
                if [m async for m in stored(bus.js, s.stream("ctl"), s.control(sid, "transcribed"))]:
                    done.add(sid)
            except Exception:  # the broker may be restarting
                pass
        await asyncio.sleep(2.0)
    return done


async def run_faults(dep: Deployment, plan: dict, t0: float, log: list[dict]) -> None:
    s = Subjects(load_config(path=str(dep.config_path), env={}).nats.prefix)
    faults = {"kill_stt": lambda: kill_stt(dep), "kill_manager": lambda: kill_manager(dep),
              "restart_server": lambda: restart_server(dep), "stop_manager": lambda: stop_manager(dep, plan["stop_s"]),
              "delete_consumer": lambda: delete_consumer(dep, s.stream("audio"), s.consumer("stt")),
              "fill_foreign": lambda: fill_foreign_stream(dep)}
    for at, name in plan["schedule"]:
        await asyncio.sleep(max(0.0, t0 + at - time.monotonic()))
        started = time.monotonic() - t0
        try:
            what = await faults[name]()
        except Exception as exc:  # a fault that could not be injected is reported, not hidden
            what = f"FAILED to inject: {type(exc).__name__}: {exc}"
        log.append({"t": round(started, 1), "fault": name, "did": what})
        say(f"  t={started:5.1f}s  {name:<16} {what}")


async def main(args: argparse.Namespace) -> int:
    plan = SHORT if args.short else FULL
    n = args.sessions or plan["sessions"]
    root = Path(tempfile.mkdtemp(prefix="voxbus-chaos-"))
    dep = Deployment(root, foreign_room=(64 if args.short else 256) << 20)
    faults: list[dict] = []
    try:
        await dep.start_server()
        dep.write_config(SESSION_IDLE_S)
        await dep.start_services()
        say(f"chaos: {n} sessions of {plan['seconds']} s; {cpu_model()}; deployment under {root}")
        async with open_bus(load_config(path=str(dep.config_path), env={}), name="chaos", embed=False) as bus:
            voices = await synthesize(bus)
            wavs, frames = {}, {}
            for i in range(n):
                path = root / f"session-{i}.wav"
                frames[f"chaos-{i}"] = frames[f"base-{i}"] = session_audio(voices, i, plan["seconds"], path)
                wavs[f"chaos-{i}"] = wavs[f"base-{i}"] = path
            base = [sid for sid in wavs if sid.startswith("base-")]
            live = [sid for sid in wavs if sid.startswith("chaos-")]
            say("baseline: the same audio without faults ...")
            pubs = await publish_all(dep, {sid: wavs[sid] for sid in base}, frames, realtime=False, timeout=300)
            bad = [p for p in pubs if p.returncode != 0]
            if bad or len(await wait_transcribed(bus, base, 600)) < n:
                say(f"baseline did not complete: {[(p.sid, p.stderr[-300:]) for p in bad]}")
                return 2
            baseline = {sid: await transcripts_of(bus, sid) for sid in base}
            say(f"baseline: {sum(map(len, baseline.values()))} utterances; live sessions start, faults:")
            t0 = time.monotonic()
            fault_task = asyncio.create_task(run_faults(dep, plan, t0, faults))
            pubs = await publish_all(dep, {sid: wavs[sid] for sid in live}, frames, realtime=True,
                                     timeout=plan["seconds"] + 180)
            await fault_task
            say(f"publishers done at t={time.monotonic() - t0:.0f}s; waiting for transcripts ...")
            await wait_transcribed(bus, live, SESSION_IDLE_S + 240)
        async with open_bus(load_config(path=str(dep.config_path), env={}), name="chaos-audit", embed=False) as bus:
            audits: list[SessionAudit] = [await audit(bus, p, baseline[p.sid.replace("chaos-", "base-")]) for p in pubs]
    finally:
        await dep.stop()
        if args.keep:
            say(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    say(table(audits))
    lost = sum(a.lost_silently for a in audits)
    dup = sum(a.duplicated for a in audits)
    base_utts = sum(a.baseline_utterances for a in audits)
    covered = base_utts - sum(a.utterances_lost for a in audits)
    failed = [f for f in faults if f["did"].startswith("FAILED") or "ACCEPTED" in f["did"]]
    print(json.dumps({"metric": "lost_silently", "value": lost, "unit": "items", "lost_silently": lost,
                      "duplicated": dup, "sessions": n, "faults": [f["fault"] for f in faults],
                      "faults_failed": [f["fault"] for f in failed],
                      "frames_lost_reported": sum(min(a.frames_lost, a.frames_reported) for a in audits),
                      "baseline": base_utts, "ratio": round(covered / base_utts, 4) if base_utts else None}))
    return 0 if lost == 0 and dup == 0 and not failed else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", action="store_true", help="the suite's version: 3 sessions of 36 s")
    parser.add_argument("--sessions", type=int, help="concurrent live sessions (default 8, or 3 with --short)")
    parser.add_argument("--keep", action="store_true", help="keep the deployment's directory (logs, store)")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind, so the deployment is stopped
    sys.exit(asyncio.run(main(parser.parse_args())))
