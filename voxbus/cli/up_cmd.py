"""`voxbus up`: server, manager, STT, TTS and assistant in one process, until Ctrl-C."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("up", parents=[common], help="run every service together (long-running)",
                       description="Start the embedded server (unless --nats or one is running), the "
                                   "ModelManager, the STT and TTS services and the assistant. Ctrl-C drains.")
    p.add_argument("--preload", action="store_true", help="load the default models at start")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from voxbus.assistant import Assistant
    from voxbus.bus import open_bus
    from voxbus.cli import load_for, run_async, stop_on_signals
    from voxbus.manager import ModelManager
    from voxbus.stt import SttService
    from voxbus.tts import TtsService

    config = load_for(args)

    async def up() -> int:
        stop = stop_on_signals()
        async with open_bus(config, name="voxbus-up") as bus:
            async with ModelManager(bus) as manager:
                if args.preload:
                    for model_id in config.manager.defaults.values():
                        await manager.pool.load(manager.pool.find(model_id))
                async with SttService(bus), TtsService(bus), Assistant(bus):
                    print(f"voxbus up on {bus.url}: manager {manager.id}, stt, tts, assistant; Ctrl-C to stop",
                          flush=True)
                    await stop.wait()
                    print("draining...", flush=True)
        return 0

    return run_async(up)
