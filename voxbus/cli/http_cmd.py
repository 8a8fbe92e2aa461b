"""`voxbus http [--host H] [--port P] [--api-key KEY]`: the OpenAI-compatible API, until Ctrl-C."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("http", parents=[common], help="serve an OpenAI-compatible HTTP API (a gateway)",
                       description="Serve /v1/audio/transcriptions, /v1/audio/speech, /v1/chat/completions, "
                                   "/v1/completions, /v1/models and /health on top of the bus: audio goes through "
                                   "the STT service as a session, text through the ModelManager. Loads no model.")
    p.add_argument("--host", help="address to listen on (default: http.host, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: http.port, 8000; 0: any free one)")
    p.add_argument("--api-key", metavar="KEY", help="require `Authorization: Bearer KEY` (default: http.api_key, "
                                                    "or $VOXBUS_API_KEY)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import os

    from voxbus.bus import open_bus
    from voxbus.cli import load_for, run_async, stop_on_signals
    from voxbus.gateways.http_app import serving

    config = load_for(args)
    host = args.host or config.http.host
    port = config.http.port if args.port is None else args.port
    key = args.api_key or os.environ.get("VOXBUS_API_KEY") or config.http.api_key

    async def serve() -> int:
        stop = stop_on_signals()
        async with open_bus(config, name="voxbus-http", embed=False) as bus:
            async with serving(bus, host, port, key) as url:
                print(f"voxbus http: OpenAI-compatible API at {url}/v1, dashboard at {url}/ (NATS {bus.url}"
                      f"{', API key required' if key else ''}); Ctrl-C to stop", flush=True)
                await stop.wait()
        return 0

    return run_async(serve)
