"""`voxbus publish FILE --session ID`: send a file's audio to a session as frames."""

from __future__ import annotations

import argparse

from voxbus.cli.args import session_id


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("publish", parents=[common], help="publish an audio file, or a microphone, to a session",
                       description="Decode FILE (wav, flac, ogg, mp3...), or record from a microphone (--mic, "
                                   "until Ctrl-C or --duration), publish it as audio frames to the session's "
                                   "audio subject, then an end-of-session event.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("file", metavar="FILE", nargs="?")
    src.add_argument("--mic", action="store_true", help="record from the microphone (the system's default input)")
    p.add_argument("--device", metavar="NAME|INDEX", help="with --mic: the input device (see python -m sounddevice)")
    p.add_argument("--duration", type=float, metavar="S", help="with --mic: stop after this many seconds")
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
    if args.mic:
        return run_async(lambda: record(args, config))
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


async def record(args: argparse.Namespace, config) -> int:
    """Microphone frames to the session in real time, until Ctrl-C, SIGTERM or --duration."""
    import asyncio
    import contextlib
    import sys

    from voxbus.bus import open_bus
    from voxbus.cli import stop_on_signals
    from voxbus.ingest import SessionPublisher
    from voxbus.microphone import Microphone, input_device

    device = int(args.device) if args.device and args.device.isdigit() else args.device
    info = input_device(device)  # no microphone: say so before connecting anywhere
    mic = Microphone(rate=16000, frame_ms=args.frame_ms or config.ingest.frame_ms, device=device)
    stop = stop_on_signals()
    async with open_bus(config, name="voxbus-publish", embed=False) as bus:
        # Frames go out as the microphone makes them: the microphone is the clock, no pacing here.
        pub = SessionPublisher(bus, args.session, meta={"source": f"microphone: {info['name']}"},
                               assistant=True if args.assistant else None)
        print(f"recording from {info['name']!r} to session {args.session}; Ctrl-C ends it", file=sys.stderr)

        async def pump() -> None:
            async for block in mic.blocks():
                await pub.send(block, mic.format)

        task = asyncio.create_task(pump())
        waits = [task, asyncio.create_task(stop.wait())]
        if args.duration:
            waits.append(asyncio.create_task(asyncio.sleep(args.duration)))
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for t in waits:
            t.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task  # (a microphone error surfaces here)
        frames = await pub.end()
    lost = f"; {mic.dropped} blocks dropped while the bus was slow" if mic.dropped else ""
    print(f"published {frames} frames ({pub.offset:.2f} s from the microphone) to session {args.session}{lost}")
    return 0
