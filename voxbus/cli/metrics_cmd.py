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
    import asyncio

    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    from voxbus.bus import open_bus
    from voxbus.cli import load_for, run_async, stop_on_signals
    from voxbus.metrics import CONTENT_TYPE, exposition

    config = load_for(args)

    async def serve() -> int:
        stop = stop_on_signals()
        async with open_bus(config, name="voxbus-metrics", embed=False) as bus:
            async def scrape(request) -> Response:
                return Response(await exposition(bus), media_type=CONTENT_TYPE)

            app = Starlette(routes=[Route("/metrics", scrape, methods=["GET"])])
            server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="warning",
                                                   lifespan="off", access_log=False))
            task = asyncio.create_task(server.serve())
            while not server.started and not task.done():
                await asyncio.sleep(0.02)
            if task.done():
                await task
                return 1
            port = server.servers[0].sockets[0].getsockname()[1]
            print(f"voxbus metrics: http://{args.host}:{port}/metrics (NATS {bus.url}); Ctrl-C to stop", flush=True)
            await stop.wait()
            server.should_exit = True
            await task
        return 0

    return run_async(serve)
