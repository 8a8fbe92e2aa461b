"""`voxbus manager`: run the ModelManager until Ctrl-C/SIGTERM, then drain and unload."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("manager", parents=[common], help="run the ModelManager service",
                       description="Serve every configured model over NATS (loads on demand).")
    p.add_argument("--preload", action="append", default=[], metavar="MODEL",
                   help="load this model at start (repeatable); 'defaults' loads each task's default")
    p.add_argument("--id", help="manager id shown in events and `voxbus models` (default: host-random)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from voxbus.bus import open_bus
    from voxbus.cli import load_for, run_async, stop_on_signals
    from voxbus.manager import ModelManager

    config = load_for(args)

    async def serve() -> int:
        stop = stop_on_signals()
        async with open_bus(config, name="voxbus-manager") as bus:
            async with ModelManager(bus, manager_id=args.id) as manager:
                print(f"model manager {manager.id} serving {len(manager.pool.slots)} models on {bus.url} "
                      f"(service {bus.subjects.service_name()}); Ctrl-C to stop", flush=True)
                wanted = list(args.preload)
                if "defaults" in wanted:
                    wanted = [w for w in wanted if w != "defaults"] + list(config.manager.defaults.values())
                for model_id in wanted:
                    await manager.pool.load(manager.pool.find(model_id))
                    print(f"loaded {model_id}", flush=True)
                await stop.wait()
                print("draining...", flush=True)
        return 0

    return run_async(serve)
