"""`voxbus say TEXT -o out.wav`: speak through the pipeline (TTS service and ModelManager)."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("say", parents=[common], help="speak text through the TTS service into a WAV file",
                       description="Send TEXT to the session's say subject and write the synthesized audio.")
    p.add_argument("text", metavar="TEXT")
    p.add_argument("-o", "--output", default="voxbus-say.wav", metavar="FILE.wav")
    p.add_argument("--voice", metavar="ID", help="TTS model id, or ID:SPEAKER (default: manager.defaults.tts)")
    p.add_argument("--rate", type=int, metavar="HZ", help="output sample rate (default: the voice's own)")
    p.add_argument("--sample", choices=("s16le", "s32le", "f32le"), default="s16le")
    p.add_argument("--session", metavar="ID", help="session id (default: a new one)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import asyncio
    import uuid

    from voxbus.cli import load_for, run_async
    from voxbus.messages import AudioFormat, SayRequest, codec
    from voxbus.pipeline import local_pipeline
    from voxbus.tts.collect import SpeechCollector

    if not args.text.strip():
        print("voxbus: nothing to say: TEXT is blank", file=sys.stderr)
        return 2
    config = load_for(args)
    sid = args.session or f"say-{uuid.uuid4().hex[:8]}"
    fmt = AudioFormat(rate=args.rate, sample=args.sample) if args.rate else None
    if fmt is None and args.sample != "s16le":
        print("voxbus: --sample needs --rate", file=sys.stderr)
        return 2

    async def say() -> int:
        async with local_pipeline(config, "voxbus-say", stt=False, tts=True) as pipe:
            async with SpeechCollector(pipe.bus, sid) as speech:
                req = SayRequest(text=args.text, voice=args.voice, format=fmt, final=True)
                await pipe.bus.js.publish(pipe.bus.subjects.say(sid), codec.encode(req))
                await asyncio.wait_for(speech.turn(0).done.wait(), config.client.deadline)
        turn = speech.turn(0)
        for err in speech.errors:
            print(f"voxbus: error: [{err.code}] {err.message}", file=sys.stderr)
        if turn.format is None:
            print("voxbus: no audio came back", file=sys.stderr)
            return 1
        turn.write_wav(args.output)
        print(f"wrote {args.output}: {turn.duration:.2f} s, {turn.format.rate} Hz {turn.format.sample}")
        if speech.errors:
            print(f"voxbus: part of the text was not spoken; {args.output} holds the rest", file=sys.stderr)
            return 1
        return 0

    return run_async(say)
