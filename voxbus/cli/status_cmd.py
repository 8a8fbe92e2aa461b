"""`voxbus status [--json] [--watch]`: every voxbus process of the deployment, and its streams."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("status", parents=[common], help="every voxbus process, its load and health; the streams",
                       description="Find every voxbus process on the bus (managers, STT, TTS, assistant, gateways: "
                                   "NATS micro discovery) and show its version, uptime, load and health, then each "
                                   "stream's size against its limits and each consumer's backlog.")
    p.add_argument("--json", action="store_true", help="one JSON document")
    p.add_argument("--watch", nargs="?", type=float, const=2.0, metavar="S",
                   help="refresh the tables in place every S seconds (default 2) until Ctrl-C")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import asyncio
    import json

    from voxbus.bus import open_bus
    from voxbus.cli import load_for, run_async, stop_on_signals
    from voxbus.cli.console import console
    from voxbus.deployment_status import deployment

    config = load_for(args)
    out = console()

    async def status() -> int:
        async with open_bus(config, name="voxbus-status", embed=False) as bus:
            if args.json:
                print(json.dumps(await deployment(bus), indent=2))
                return 0
            if not args.watch:
                out.print(*render(await deployment(bus)))
                return 0
            from rich.console import Group
            from rich.live import Live

            stop = stop_on_signals()
            with Live(Group(*render(await deployment(bus))), console=out, auto_refresh=False) as live:
                while not stop.is_set():
                    try:
                        await asyncio.wait_for(stop.wait(), args.watch)
                    except asyncio.TimeoutError:
                        live.update(Group(*render(await deployment(bus))), refresh=True)
        return 0

    return run_async(status)


def render(doc: dict) -> list:
    from voxbus.cli.console import add_row, table

    procs = table(("process", "id", "version", "host/pid", "up", "health", "sessions", "queue", "requests", "errors"),
                  right=("up", "sessions", "queue", "requests", "errors"))
    for p in doc["processes"]:
        queue = p["in_flight"] if p["kind"] == "manager" else p["pending"]
        add_row(procs, p["kind"], p["id"][:10], p["version"], f"{p['host']}/{p['pid']}", _age(p["uptime_s"]),
                ("ok" if p["healthy"] else "UNHEALTHY") + (", standby" if p.get("standby") else ""), _n(p["sessions"]), _n(queue), _n(p["requests"]),
                _n(p["errors"]), style=None if p["healthy"] else "red")
    streams = table(("stream", "bytes", "of max", "messages", "consumer", "pending", "unacked"),
                    right=("bytes", "of max", "messages", "pending", "unacked"))
    for s in doc["streams"]:
        share = f"{100 * s['bytes'] / s['max_bytes']:.1f} %" if s["max_bytes"] and s["max_bytes"] > 0 else "-"
        rows = s["consumers"] or [{"name": "", "pending": None, "ack_pending": None}]
        for i, c in enumerate(rows):
            first = i == 0
            add_row(streams, s["stream"] if first else "", _bytes(s["bytes"]) if first else "", share if first else "",
                    _n(s["messages"]) if first else "", c["name"], _n(c["pending"]), _n(c["ack_pending"]))
    return [f"voxbus on {doc['nats']} (prefix {doc['prefix']}): {len(doc['processes'])} processes", procs, streams]


def _n(v) -> str:
    return "-" if v is None else str(v)


def _age(s) -> str:
    if s is None:
        return "-"
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _bytes(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"
