"""`voxbus wyoming [--uri tcp://HOST:PORT] [--zeroconf]`: a Wyoming server for Home Assistant."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("wyoming", parents=[common], help="serve the Wyoming protocol (Home Assistant) as a gateway",
                       description="Speech-to-text and text-to-speech over Wyoming, on top of the bus: point Home "
                                   "Assistant's Wyoming integration at it. Loads no model.")
    p.add_argument("--uri", help="where to listen (default: wyoming.uri, tcp://127.0.0.1:10300)")
    p.add_argument("--zeroconf", action="store_true", help="announce it on the local network (_wyoming._tcp)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from voxbus.bus import open_bus
    from voxbus.cli import load_for, run_async, stop_on_signals
    from voxbus.gateways.wyoming_gateway import serving

    config = load_for(args)

    async def serve() -> int:
        stop = stop_on_signals()
        async with open_bus(config, name="voxbus-wyoming", embed=False) as bus:
            async with serving(bus, args.uri or config.wyoming.uri, args.zeroconf or config.wyoming.zeroconf) as uri:
                print(f"voxbus wyoming: serving {uri} (NATS {bus.url}); Ctrl-C to stop", flush=True)
                await stop.wait()
        return 0

    return run_async(serve)
