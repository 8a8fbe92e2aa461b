"""`voxbus events [--since 1h] [--follow] [--model ID] [--json]`: the ADMIN history as a timeline."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("events", parents=[common], help="model and resource events, as a timeline",
                       description="The ADMIN stream: models loading, loaded, evicted, unloaded, refused, crashed, "
                                   "quarantined; KV-cache events; resource snapshots; retention warnings.")
    p.add_argument("--since", metavar="WHEN", help="how far back: 30m, 1h, 2d, or a time (2026-12-04T10:00); "
                                                   "default: everything stored")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new events until Ctrl-C")
    p.add_argument("--model", metavar="ID", help="only events about this model")
    p.add_argument("--json", action="store_true", help="one JSON event per line")
    p.add_argument("--resources", action="store_true", help="include the periodic resource snapshots")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import asyncio
    import sys

    from voxbus.admin_events import describe, events, since_time, stamp
    from voxbus.bus import open_bus
    from voxbus.cli import load_for, run_async, stop_on_signals
    from voxbus.messages import codec
    from voxbus.messages.admin import ResourceSnapshot

    config = load_for(args)
    since = since_time(args.since)

    async def timeline() -> int:
        stop = stop_on_signals()
        async with open_bus(config, name="voxbus-events", embed=False) as bus:
            async def show() -> None:
                async for event in events(bus, since, follow=args.follow, model=args.model):
                    if isinstance(event, ResourceSnapshot) and not (args.resources or args.json):
                        continue
                    if args.json:
                        sys.stdout.write(codec.encode(event).decode() + "\n")
                    else:
                        who = f" [{event.manager}]" if event.manager else ""
                        sys.stdout.write(f"{stamp(event.ts)}{who} {describe(event)}\n")
                    sys.stdout.flush()

            task = asyncio.create_task(show())
            await asyncio.wait([task, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        return 0

    return run_async(timeline)
