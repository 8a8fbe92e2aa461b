"""`voxbus listen [SESSION | --all]`: print transcripts as they arrive."""

from __future__ import annotations

import argparse
import sys

from voxbus.cli.args import session_id


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("listen", parents=[common], help="print transcripts as they arrive",
                       description="Follow one session's transcripts (until it is transcribed) or every "
                                   "session's (until Ctrl-C).")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("session", nargs="?", metavar="SESSION", type=session_id)
    who.add_argument("--all", action="store_true", help="every session")
    p.add_argument("--json", action="store_true", help="one JSON Transcript per line")
    p.add_argument("--from-start", action="store_true", help="begin with what is already stored")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from nats.js.api import DeliverPolicy

    from voxbus.bus import open_bus
    from voxbus.cli import load_for, run_async, stop_on_signals
    from voxbus.messages import codec
    from voxbus.messages.control import SessionTranscribed
    from voxbus.messages.text import Transcript
    from voxbus.timecodes import clock

    config = load_for(args)

    async def listen() -> int:
        stop = stop_on_signals()
        async with open_bus(config, name="voxbus-listen", embed=False) as bus:
            s = bus.subjects
            subject = s.all_transcripts() if args.all else s.transcript(args.session)
            expected: list[int] = []
            seen: set[int] = set()

            def finished() -> bool:
                # The last transcript and the `transcribed` event travel on different streams:
                # wait for both, whichever comes first.
                return bool(expected) and max(seen, default=-1) >= expected[0] - 1

            async def on_transcript(msg) -> None:
                t = codec.decode(msg.data, Transcript)
                if args.json:
                    sys.stdout.write(codec.encode(t).decode() + "\n")
                else:
                    who = f"{t.session} " if args.all else ""
                    sys.stdout.write(f"{who}#{t.utterance} [{clock(t.start)} - {clock(t.end)}] {t.text}\n")
                sys.stdout.flush()
                seen.add(t.utterance)
                if finished():
                    stop.set()

            async def on_done(msg) -> None:
                expected.append(codec.decode(msg.data, SessionTranscribed).utterances)
                if finished():
                    stop.set()

            # Ordered consumers: ephemeral, no acks, resumed in order after a reconnect.
            policy = DeliverPolicy.ALL if args.from_start else DeliverPolicy.NEW
            await bus.js.subscribe(subject, cb=on_transcript, ordered_consumer=True, deliver_policy=policy)
            if not args.all:
                await bus.js.subscribe(s.control(args.session, "transcribed"), cb=on_done, ordered_consumer=True,
                                       deliver_policy=policy)
            await stop.wait()
        return 0

    return run_async(listen)
