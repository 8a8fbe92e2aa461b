"""`voxbus demo`: the whole voice loop once, with nothing running beforehand."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.table import Table

    from voxbus.demo import LoopResult

DEFAULT_QUESTION = "What is a good name for a small black cat?"


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("demo", parents=[common], help="speak a question through the whole pipeline, timed",
                       description="Speak a question with the Piper voice, stream it as audio frames, and "
                                   "print the transcript, the streamed reply, the reply's WAV file and "
                                   "per-stage latencies. Runs everything in-process when nothing is running.")
    p.add_argument("question", nargs="?", default=DEFAULT_QUESTION)
    p.add_argument("-o", "--output", default="voxbus-demo-reply.wav", metavar="FILE.wav")
    p.add_argument("--end-event", action="store_true",
                   help="send the question at once and end it with an end event (no pause to wait for) "
                        "instead of speaking it in real time and letting the STT hear the silence after it")
    p.set_defaults(handler=run)


def latency_table(res: LoopResult) -> Table:
    from voxbus.cli.console import add_row, table

    names = {"first partial": "STT first interim transcript", "early final": "STT early final (closing partial)",
             "transcript": "STT (transcript published)",
             "llm first token": "LLM first token", "llm done": "LLM done", "first audio chunk": "first audio chunk"}
    out = table(("stage (after the end of the question; < 0: while speaking)", "ms"), right=("ms",))
    for k, v in res.stages.items():
        add_row(out, names.get(k, k), f"{v * 1000:.0f}")
    return out


def run(args: argparse.Namespace) -> int:
    import logging
    from pathlib import Path

    from voxbus.cli import load_for, run_async
    from voxbus.cli.console import console
    from voxbus.demo import echo_stdout, voice_turn
    from voxbus.pipeline import local_pipeline

    if not args.verbose:
        logging.getLogger().setLevel(logging.WARNING)
    config = load_for(args)
    out = console()

    async def demo() -> int:
        async with local_pipeline(config, "voxbus-demo", stt=True, tts=True, assistant=True) as pipe:
            print(f"question (spoken by the Piper voice): {args.question}", flush=True)
            from voxbus.client import ModelClient
            client = ModelClient.from_bus(pipe.bus)
            with out.status("warming up the models...") as status:
                for kind in ("stt", "llm", "tts"):
                    status.update(f"warming up the models: loading {config.manager.defaults[kind]}")
                    await client.load(config.manager.defaults[kind])
            print("models ready", flush=True)
            res = await voice_turn(pipe, args.question, Path(args.output), echo=echo_stdout, live=not args.end_event)
        print(f"reply audio: {res.wav.resolve() if res.wav else '(none)'} ({res.audio_s:.1f} s)")
        out.print(latency_table(res))
        return 0 if res.wav else 1

    return run_async(demo)
