"""`voxbus stt`: run the STT service until Ctrl-C/SIGTERM; what is unfinished resumes next run."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("stt", parents=[common], help="run the STT service",
                       description="Consume every session's audio, cut utterances with a VAD, ask the "
                                   "ModelManager to transcribe them and publish the transcripts. With "
                                   "--partitions N (stt.partitions), any number of these processes share the "
                                   "sessions; with 1, a second process stands by.")
    p.add_argument("--partitions", type=int, metavar="N",
                   help="split sessions into N partitions shared by the running STT processes (stt.partitions; "
                        "give every STT process the same N)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from voxbus.bus import open_bus
    from voxbus.cli import load_for, run_async, stop_on_signals
    from voxbus.stt import SttService
    from voxbus.tenancy import TenantServices

    config = load_for(args, **({"stt": {"partitions": args.partitions}} if args.partitions else {}))

    async def serve() -> int:
        import asyncio

        stop = stop_on_signals()
        started = asyncio.Event()

        async def services(bus) -> None:
            async with SttService(bus) as stt, TenantServices(bus, [SttService]) as tenants:
                started.set()
                served = f" and {len(tenants.running)} tenants'" if tenants.running else ""
                share = (f" (partitioned: {config.stt.partitions}, shared with the other STT processes)"
                         if stt.partitions is not None else "")
                print(f"STT service consuming {bus.subjects.all_audio_in()}{served}{share} on {bus.url}; Ctrl-C to stop",
                      flush=True)
                await stop.wait()
                print("draining...", flush=True)

        async with open_bus(config, name="voxbus-stt") as bus:
            work = asyncio.create_task(services(bus))
            stopped = asyncio.create_task(stop.wait())
            await asyncio.wait([work, stopped], return_when=asyncio.FIRST_COMPLETED)
            if not started.is_set() and not work.done():  # Ctrl-C while still starting: a standby stops at once
                work.cancel()
                print("stopped while standing by for the STT consumer", flush=True)
            stopped.cancel()
            try:
                await work
            except asyncio.CancelledError:
                pass
        return 0

    return run_async(serve)
