"""`voxbus publish FILE --session ID`: send a file's audio to a session as frames."""

from __future__ import annotations

import argparse

from voxbus.cli.args import session_id


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("publish", parents=[common], help="publish an audio file to a session",
                       description="Decode FILE (wav, flac, ogg, mp3...), publish it as audio frames to the "
                                   "session's audio subject, then an end-of-session event.")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--session", required=True, metavar="ID", type=session_id, help="session id (letters, digits, - _ : @ + = ~)")
    p.add_argument("--realtime", action="store_true", help="pace frames at real time, like a live source")
    p.add_argument("--assistant", action="store_true", help="ask the assistant to answer this session (voxbus up)")
    p.add_argument("--frame-ms", type=int, metavar="MS", help="frame length (default: ingest.frame_ms, 20)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import time

    from voxbus.bus import open_bus
    from voxbus.cli import load_for, run_async
    from voxbus.ingest import SessionPublisher, read_audio

    overrides = {"ingest": {"frame_ms": args.frame_ms}} if args.frame_ms else {}
    config = load_for(args, **overrides)
    pcm, fmt = read_audio(args.file)

    async def publish() -> int:
        async with open_bus(config, name="voxbus-publish", embed=False) as bus:
            t0 = time.monotonic()
            pub = SessionPublisher(bus, args.session, realtime=args.realtime, meta={"file": args.file},
                                   assistant=True if args.assistant else None)
            frames = await pub.publish_pcm(pcm, fmt)
            took = time.monotonic() - t0
        print(f"published {frames} frames ({fmt.duration(len(pcm)):.2f} s of {fmt.rate} Hz {fmt.channels}-channel "
              f"{fmt.sample}) to session {args.session} in {took:.2f} s")
        return 0

    return run_async(publish)
