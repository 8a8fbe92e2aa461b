"""`voxbus transcribe FILE...`: the main job. Each file becomes its own session on the bus; the
transcripts come back per file. Works with nothing running (everything runs in-process on a
private server that is removed afterwards) and with a running deployment (--nats, or a server on
the default port: then the running manager and STT service do the work)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

import msgspec


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("transcribe", parents=[common], help="transcribe audio files (the main job)",
                       description="Publish each file as a session and print its transcripts. "
                                   "Reads wav, flac, ogg, mp3 and whatever else libsndfile decodes.")
    p.add_argument("files", nargs="+", metavar="FILE")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="one JSON document with every transcript")
    out.add_argument("--srt", action="store_true",
                     help="SubRip subtitles (several files: one FILE.srt each, in --out-dir)")
    out.add_argument("--vtt", action="store_true",
                     help="WebVTT subtitles (several files: one FILE.vtt each, in --out-dir)")
    p.add_argument("--words", action="store_true",
                   help="--srt/--vtt: one cue per word; --json: each file's words in one list too")
    p.add_argument("--out-dir", default=".", metavar="DIR", help="where --srt and --vtt write with several files")
    p.add_argument("--realtime", action="store_true", help="publish at real-time pace, like a live source")
    p.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")
    p.set_defaults(handler=run)


class FileProgress:
    """How far the files have got: one bar over their audio, on stderr, only on a terminal."""

    def __init__(self, jobs, enabled: bool) -> None:
        from voxbus.cli.console import audio_progress

        self.jobs = jobs
        self.total = sum(j.duration for j in jobs) or 1.0
        self.bar = audio_progress(enabled)
        self.task = self.bar.add_task("publishing", total=self.total, utterances=0)

    def __enter__(self) -> FileProgress:
        self.bar.start()
        return self

    def __exit__(self, *exc) -> None:
        self.update()
        self.bar.stop()

    def update(self) -> None:
        sent = sum(j.published_s for j in self.jobs)
        self.bar.update(self.task, completed=min(sum(j.transcribed_s for j in self.jobs), self.total),
                        description="publishing" if sent < self.total - 1e-6 else "transcribing",
                        utterances=sum(len(j.transcripts) for j in self.jobs))


def run(args: argparse.Namespace) -> int:
    from voxbus.cli import load_for, run_async
    from voxbus.pipeline import local_pipeline
    from voxbus.timecodes import clock
    from voxbus.transcribe_job import load_jobs, to_srt, to_vtt, transcribe_jobs

    if not args.verbose:  # the transcripts are the output; service chatter only with -v
        import logging
        logging.getLogger().setLevel(logging.WARNING)
    config = load_for(args)
    jobs = load_jobs(args.files)

    async def work() -> None:
        async with local_pipeline(config, "voxbus-transcribe") as pipe:
            with FileProgress(jobs, sys.stderr.isatty() and not args.no_progress) as progress:
                async def ticker() -> None:
                    while True:
                        progress.update()
                        await asyncio.sleep(0.2)

                tick = asyncio.create_task(ticker())
                try:
                    await transcribe_jobs(pipe.bus, jobs, realtime=args.realtime, on_progress=progress.update)
                finally:
                    tick.cancel()

    run_async(work)
    for job in jobs:
        for err in job.errors:
            print(f"voxbus: {job.path}: {err.code}: {err.message}", file=sys.stderr)
    if args.json:
        doc = [{"file": str(j.path), "session": j.session, "duration": round(j.duration, 3), "text": j.text,
                "errors": msgspec.to_builtins(j.errors), "transcripts": msgspec.to_builtins(j.ordered()),
                **({"words": [msgspec.to_builtins(w) for t in j.ordered() for w in t.words]} if args.words else {})}
               for j in jobs]
        print(json.dumps(doc, indent=2, ensure_ascii=False))
    elif args.srt or args.vtt:
        render, suffix = (to_srt, ".srt") if args.srt else (to_vtt, ".vtt")
        if len(jobs) == 1:
            sys.stdout.write(render(jobs[0], args.words))
        else:
            out = Path(args.out_dir)
            out.mkdir(parents=True, exist_ok=True)
            for job in jobs:
                target = out / f"{job.path.stem}{suffix}"
                target.write_text(render(job, args.words))
                print(target)
    else:
        for i, job in enumerate(jobs):
            if len(jobs) > 1:
                print(f"{'' if i == 0 else chr(10)}== {job.path} ({job.duration:.1f} s)")
            for t in job.ordered():
                print(f"[{clock(t.start)} - {clock(t.end)}] {t.text}")
    return 1 if any(j.errors for j in jobs) else 0
