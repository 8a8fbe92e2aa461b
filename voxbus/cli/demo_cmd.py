"""`voxbus demo`: the whole voice loop once, with nothing running beforehand."""

from __future__ import annotations

import argparse

DEFAULT_QUESTION = "What is a good name for a small black cat?"


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("demo", parents=[common], help="speak a question through the whole pipeline, timed",
                       description="Speak a question with the Piper voice, stream it as audio frames, and "
                                   "print the transcript, the streamed reply, the reply's WAV file and "
                                   "per-stage latencies. Runs everything in-process when nothing is running.")
    p.add_argument("question", nargs="?", default=DEFAULT_QUESTION)
    p.add_argument("-o", "--output", default="voxbus-demo-reply.wav", metavar="FILE.wav")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import logging
    from pathlib import Path

    from voxbus.cli import load_for, run_async
    from voxbus.demo import echo_stdout, latency_table, voice_turn
    from voxbus.pipeline import local_pipeline

    if not args.verbose:
        logging.getLogger().setLevel(logging.WARNING)
    config = load_for(args)

    async def demo() -> int:
        async with local_pipeline(config, "voxbus-demo", stt=True, tts=True, assistant=True) as pipe:
            print(f"question (spoken by the Piper voice): {args.question}", flush=True)
            print("warming up the models...", flush=True)
            client_models = ("stt", "llm", "tts")
            from voxbus.client import ModelClient
            client = ModelClient.from_bus(pipe.bus)
            for kind in client_models:
                await client.load(config.manager.defaults[kind])
            res = await voice_turn(pipe, args.question, Path(args.output), echo=echo_stdout)
        print(f"reply audio: {res.wav.resolve() if res.wav else '(none)'} ({res.audio_s:.1f} s)")
        print(latency_table(res))
        return 0 if res.wav else 1

    return run_async(demo)
