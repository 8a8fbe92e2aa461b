"""`voxbus metrics [--host H] [--port P]`: Prometheus metrics of the deployment, standalone."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("metrics", parents=[common], help="serve the deployment's Prometheus metrics at /metrics",
                       description="Serve /metrics (Prometheus text format), gathered from the bus at each scrape: "
                                   "models, every voxbus process, streams and consumers. `voxbus http` serves the "
                                   "same at its /metrics.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9464, help="default 9464; 0: any free one")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    from voxbus.bus import open_bus
    from voxbus.cli import load_for, run_async, stop_on_signals
    from voxbus.gateways.http_app import served
    from voxbus.metrics import CONTENT_TYPE, exposition

    config = load_for(args)

    async def serve() -> int:
        stop = stop_on_signals()
        async with open_bus(config, name="voxbus-metrics", embed=False) as bus:
            async def scrape(request) -> Response:
                return Response(await exposition(bus), media_type=CONTENT_TYPE)

            async with served(Starlette(routes=[Route("/metrics", scrape, methods=["GET"])]), args.host,
                              args.port) as url:
                print(f"voxbus metrics: {url}/metrics (NATS {bus.url}); Ctrl-C to stop", flush=True)
                await stop.wait()
        return 0

    return run_async(serve)
