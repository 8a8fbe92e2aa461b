"""`voxbus models [list|load ID|unload ID]`: what the ModelManager holds, as a table."""

from __future__ import annotations

import argparse
import sys

import msgspec

from voxbus.messages.model import ModelInfo


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


def format_table(models: list[ModelInfo]) -> str:
    """One row per model, then one indented row per worker process of a loaded model."""
    head = ("ID", "KIND", "BACKEND", "STATE", "RAM", "VRAM", "QUANT", "VERSION", "FINGERPRINT", "QUEUE", "CRASH",
            "REQS", "ERR", "P50ms", "P95ms", "SPEED", "LOADms")
    rows: list[tuple[str, ...]] = [head]
    workers: dict[int, list[str]] = {}
    for m in models:
        x = m.metrics
        speed = f"{x.tokens_per_s:.0f} tok/s" if x.tokens_per_s else (f"RTF {x.real_time_factor:.3f}" if x.real_time_factor else "-")
        rows.append((
            m.id + (" *" if m.default_for else "") + (" (pinned)" if m.pinned else ""), m.kind, m.backend, m.state,
            _mib(m.ram_bytes), _mib(m.vram_bytes), m.quantization, m.version or "-", m.fingerprint or "-",
            f"{m.queue}/{m.max_queue}", str(m.crashes), str(x.requests), str(x.errors), f"{x.inference_ms_p50:.0f}",
            f"{x.inference_ms_p95:.0f}", speed, f"{x.load_ms:.0f}" if x.load_ms else "-",
        ))
        workers[len(rows) - 1] = [
            f"  └ worker {w.index}: pid {w.pid}, {w.state}, RSS {_mib(w.rss_bytes)}"
            + (f", VRAM {_mib(w.vram_bytes)}" if w.vram_bytes else "") + f", queue {w.queue}, {w.jobs} jobs, "
            f"{w.crashes} crashes" for w in m.workers]
        if m.error and m.state in ("failed", "crashed", "quarantined"):
            workers[len(rows) - 1].append(f"  └ {m.error}")
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = []
    for n, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        lines.extend(workers.get(n, []))
    return "\n".join(lines) + "\n(* default for its task)"


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
                    print(f"manager {reply.manager}")
                    print(format_table(reply.models))
                return 0
            reply = await (client.load(args.model) if action == "load" else client.unload(args.model))
            m = reply.model
            print(f"{m.id}: {m.state} on manager {reply.manager} (RAM {_mib(m.ram_bytes)}, VRAM {_mib(m.vram_bytes)})")
            return 0

    return run_async(go)
