"""`voxbus replay SESSION`: a recorded session's audio, transcripts and events, from the streams."""

from __future__ import annotations

import argparse
import json
import sys


from voxbus.cli.args import session_id


def _seconds(text: str) -> float:
    from voxbus.config.units import Duration

    try:
        return float(Duration.parse(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("replay", parents=[common], help="replay a recorded session",
                       description="Replay a session's audio frames, transcripts and control events from the "
                                   "streams without disturbing live consumers. Times are session time "
                                   "(seconds from its first frame), e.g. 4.5, 1500ms, 2m.")
    p.add_argument("session", metavar="SESSION", type=session_id, nargs="?")
    p.add_argument("--since", type=_seconds, metavar="T", help="from this session time")
    p.add_argument("--until", type=_seconds, metavar="T", help="up to this session time")
    p.add_argument("--from-seq", type=int, metavar="N", help="audio frames from sequence number N")
    p.add_argument("--pace", choices=("original", "instant"), default="instant",
                   help="original: as the events happened; instant: at once (default)")
    p.add_argument("--audio-out", metavar="FILE.wav", help="rebuild the replayed audio as a WAV file")
    p.add_argument("--json", action="store_true", help="one JSON event per line, audio frames included")
    p.add_argument("--retranscribe", action="store_true",
                   help="run the stored audio again through the STT (VAD, cutting: the settings of --config) and a "
                        "model (--model), and show what changed against the stored transcripts, with the WER")
    p.add_argument("--model", metavar="ID", help="with --retranscribe: the STT model (default: the config's)")
    p.add_argument("--all", action="store_true",
                   help="with --retranscribe: every session transcribed within --since (default 24h), summarised")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from voxbus.bus import open_bus
    from voxbus.cli import load_for, run_async
    from voxbus.replay import Window, load_session, paced, write_wav
    from voxbus.timecodes import clock

    config = load_for(args)
    if args.all and not args.retranscribe:
        raise SystemExit("voxbus replay: --all goes with --retranscribe")
    if args.session is None and not args.all:
        raise SystemExit("voxbus replay: give a SESSION (or --retranscribe --all)")
    if args.retranscribe:
        from voxbus.cli.retranscribe_view import run_retranscribe

        return run_retranscribe(args, config)
    window = Window(since=args.since, until=args.until, from_seq=args.from_seq)

    async def replay() -> int:
        async with open_bus(config, name="voxbus-replay", embed=False) as bus:
            rec = await load_session(bus, args.session, window)
        if not rec.events:
            print(f"voxbus: nothing stored for session {args.session} in that range", file=sys.stderr)
            return 1
        async for ev in paced(rec.events, args.pace == "original"):
            if args.json:
                print(json.dumps(ev.as_json(), ensure_ascii=False), flush=True)
            elif ev.kind == "transcript":
                t = ev.body
                print(f"{clock(ev.t)}  #{t.utterance} [{clock(t.start)} - {clock(t.end)}] {t.text}", flush=True)
            elif ev.kind == "control":
                detail = getattr(ev.body, "message", "") or getattr(ev.body, "reason", "")
                print(f"{clock(ev.t)}  ({type(ev.body).__name__}{': ' + detail if detail else ''})", flush=True)
        if args.audio_out:
            written = write_wav(rec, args.audio_out)
            if written is None:
                print("voxbus: no audio frames in that range; no WAV written", file=sys.stderr)
                return 1
            n, fmt = written
            print(f"wrote {args.audio_out}: {n} frames, {rec.audio_s:.2f} s, {fmt.rate} Hz, {fmt.channels} ch, "
                  f"{fmt.sample}", file=sys.stderr if args.json else sys.stdout)
        elif not args.json:
            print(f"audio: {rec.frames} frames, {rec.audio_s:.2f} s")
        return 0

    return run_async(replay)
