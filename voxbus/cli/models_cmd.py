"""`voxbus models [list|load ID|unload ID]`: what the ModelManager holds, as a table."""

from __future__ import annotations

import argparse
import sys

import msgspec

from rich.table import Table

from voxbus.cli.console import add_row, console, table
from voxbus.messages.model import ListModelsReply, ModelInfo


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("models", parents=[common], help="list, load or unload the manager's models")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    msub = p.add_subparsers(dest="models_command", metavar="ACTION")
    listing = msub.add_parser("list", parents=[common], help="table of models (the default)")
    # SUPPRESS keeps `voxbus models --json` working when `list` is not given.
    listing.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON instead of a table")
    for verb in ("load", "unload"):
        v = msub.add_parser(verb, parents=[common], help=f"{verb} one model")
        v.add_argument("model", metavar="ID")
    p.set_defaults(handler=run)


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.0f}M" if n else "-"


HEAD = ("ID", "KIND", "BACKEND", "STATE", "RAM", "VRAM", "QUANT", "VERSION", "FINGERPRINT", "QUEUE", "CRASH",
        "REQS", "ERR", "P50ms", "P95ms", "SPEED", "LOADms")
NUMERIC = ("RAM", "VRAM", "QUEUE", "CRASH", "REQS", "ERR", "P50ms", "P95ms", "LOADms")


def models_table(models: list[ModelInfo]) -> Table:
    """One row per model; under a loaded one, a row per worker process in the same columns (its
    state, resident memory, queue, crashes and jobs served)."""
    out = table(HEAD, right=NUMERIC)
    for m in models:
        x = m.metrics
        speed = f"{x.tokens_per_s:.0f} tok/s" if x.tokens_per_s else (f"RTF {x.real_time_factor:.3f}" if x.real_time_factor else "-")
        add_row(
            out, m.id + (" *" if m.default_for else "") + (" (pinned)" if m.pinned else ""), m.kind, m.backend, m.state,
            _mib(m.ram_bytes), _mib(m.vram_bytes), m.quantization, m.version or "-", m.fingerprint or "-",
            f"{m.queue}/{m.max_queue}", str(m.crashes), str(x.requests), str(x.errors), f"{x.inference_ms_p50:.0f}",
            f"{x.inference_ms_p95:.0f}", speed, f"{x.load_ms:.0f}" if x.load_ms else "-",
        )
        for w in m.workers:
            add_row(out, f"  └ worker {w.index} (pid {w.pid})", "", "", w.state, _mib(w.rss_bytes),
                _mib(w.vram_bytes), "", "", "", str(w.queue), str(w.crashes), str(w.jobs), style="dim")
    return out


def print_models(reply: ListModelsReply) -> None:
    out = console()
    out.print(f"manager {reply.manager}", markup=False)
    out.print(models_table(reply.models))
    out.print("(* default for its task; worker rows: RAM is the process's resident memory, REQS its jobs)")
    for m in reply.models:
        if m.error and m.state in ("failed", "crashed", "quarantined"):
            out.print(f"{m.id} {m.state}: {m.error}", markup=False)


def run(args: argparse.Namespace) -> int:
    from voxbus.bus import open_bus
    from voxbus.cli import load_for, run_async
    from voxbus.client import ModelClient

    config = load_for(args)

    async def go() -> int:
        async with open_bus(config, name="voxbus-cli", streams=False, embed=False) as bus:
            client = ModelClient.from_bus(bus)
            action = args.models_command or "list"
            if action == "list":
                reply = await client.list_models()
                if args.json:
                    sys.stdout.write(msgspec.json.encode(reply).decode() + "\n")
                else:
                    print_models(reply)
                return 0
            reply = await (client.load(args.model) if action == "load" else client.unload(args.model))
            m = reply.model
            print(f"{m.id}: {m.state} on manager {reply.manager} (RAM {_mib(m.ram_bytes)}, VRAM {_mib(m.vram_bytes)})")
            return 0

    return run_async(go)
