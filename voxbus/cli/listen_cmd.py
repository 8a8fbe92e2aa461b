"""`voxbus listen [SESSION | --all]`: print transcripts as they arrive.

On a terminal, the utterance being spoken shows as one line rewritten in place with each interim
transcript (its stable words bright, the rest dim), which its final then replaces for good.
Piped, only finals are printed; `--json` prints every event, one JSON object per line with an
`event` field ("partial", "transcript", "transcribed")."""

from __future__ import annotations

import argparse
import sys

from voxbus.cli.args import session_id


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("listen", parents=[common], help="print transcripts as they arrive",
                       description="Follow one session's transcripts (until it is transcribed) or every "
                                   "session's (until Ctrl-C). On a terminal, interim text updates in place.")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("session", nargs="?", metavar="SESSION", type=session_id)
    who.add_argument("--all", action="store_true", help="every session")
    p.add_argument("--json", action="store_true",
                   help="every event as one JSON object per line (partials, transcripts, the transcribed event)")
    p.add_argument("--no-partials", action="store_true", help="finals only, on a terminal too")
    p.add_argument("--from-start", action="store_true", help="begin with what is already stored")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from nats.js.api import DeliverPolicy

    from voxbus.bus import open_bus
    from voxbus.cli import load_for, run_async, stop_on_signals
    from voxbus.messages import codec
    from voxbus.cli.live_line import LiveLine
    from voxbus.messages.control import SessionTranscribed
    from voxbus.messages.text import PartialTranscript, Transcript
    from voxbus.timecodes import clock

    config = load_for(args)
    line = LiveLine(sys.stdout)
    partials = args.json or (line.tty and not args.no_partials)

    def emit(event: str, obj) -> None:
        doc = codec.encode(obj).decode()
        sys.stdout.write('{"event":"%s",%s\n' % (event, doc[1:]))
        sys.stdout.flush()

    async def listen() -> int:
        stop = stop_on_signals()
        async with open_bus(config, name="voxbus-listen", embed=False) as bus:
            s = bus.subjects
            subject = s.all_transcripts() if args.all else s.transcript(args.session)
            expected: list[int] = []
            seen: set[int] = set()
            finals: set[tuple[str, int]] = set()

            def finished() -> bool:
                # The last transcript and the `transcribed` event travel on different streams:
                # wait for both, whichever comes first.
                return bool(expected) and max(seen, default=-1) >= expected[0] - 1

            async def on_transcript(msg) -> None:
                t = codec.decode(msg.data, Transcript)
                if args.json:
                    emit("transcript", t)
                else:
                    who = f"{t.session} " if args.all else ""
                    line.final(f"{who}#{t.utterance} [{clock(t.start)} - {clock(t.end)}] {t.text}", t.session)
                seen.add(t.utterance)
                finals.add((t.session, t.utterance))
                if finished():
                    stop.set()

            async def on_partial(msg) -> None:
                p = codec.decode(msg.data, PartialTranscript)
                if (p.session, p.utterance) in finals:
                    return  # (a partial delivered after its final: its text is already printed)
                if args.json:
                    emit("partial", p)
                else:
                    who = f"{p.session} " if args.all else ""
                    line.interim(f"{who}#{p.utterance} [{clock(p.start)} - {clock(p.end)}] ", p.stable,
                                 p.text[len(p.stable):], p.session)

            async def on_done(msg) -> None:
                event = codec.decode(msg.data, SessionTranscribed)
                expected.append(event.utterances)
                if args.json:
                    emit("transcribed", event)
                if finished():
                    stop.set()

            # Ordered consumers: ephemeral, no acks, resumed in order after a reconnect.
            policy = DeliverPolicy.ALL if args.from_start else DeliverPolicy.NEW
            await bus.js.subscribe(subject, cb=on_transcript, ordered_consumer=True, deliver_policy=policy)
            if partials:
                await bus.js.subscribe(s.all_partials() if args.all else s.partial(args.session), cb=on_partial,
                                       ordered_consumer=True, deliver_policy=policy)
            if not args.all:
                await bus.js.subscribe(s.control(args.session, "transcribed"), cb=on_done, ordered_consumer=True,
                                       deliver_policy=policy)
            await stop.wait()
        line.close()
        return 0

    return run_async(listen)
