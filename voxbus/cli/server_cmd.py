"""`voxbus server`: run the embedded nats-server in the foreground until Ctrl-C/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio

import msgspec

from voxbus.server import NatsServer


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("server", parents=[common], help="run the embedded NATS server (JetStream on)",
                       description="Start nats-server with voxbus's configuration and keep it running until Ctrl-C.")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="client port (default 4222; 0 picks a free one)")
    p.add_argument("--monitor-port", type=int, help="loopback monitoring port (default 8222; 0 picks a free one)")
    p.add_argument("--store-dir", help="JetStream file store (default: the user data dir)")
    p.add_argument("--auth", action="store_true",
                   help="authentication on: only credentials from `voxbus creds new` connect, each with its role")
    p.add_argument("--tls", action="store_true",
                   help="TLS on the client port (a local CA and server certificate are made on first use)")
    p.add_argument("--tls-cert", metavar="FILE", help="the server certificate to use instead (with --tls-key)")
    p.add_argument("--tls-key", metavar="FILE", help="its private key")
    c = p.add_argument_group("cluster", "run this server as one node of a NATS cluster (docs/DEPLOY.md)")
    c.add_argument("--routes", metavar="URL[,URL]",
                   help="the nodes' route URLs (nats://HOST:6222,...); turns clustering on")
    c.add_argument("--cluster-port", type=int, metavar="PORT", help="where this node listens for routes (default 6222)")
    c.add_argument("--cluster-name", metavar="NAME", help="the cluster's name, the same on every node (default voxbus)")
    c.add_argument("--server-name", metavar="NAME", help="this node's unique name (default HOSTNAME-PORT)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from voxbus.cli import load_for, run_async, stop_on_signals

    config = load_for(args)
    emb = config.nats.embedded
    changes = {k: v for k, v in (("host", args.host), ("port", args.port), ("monitor_port", args.monitor_port),
                                 ("store_dir", args.store_dir), ("auth", args.auth or None),
                                 ("tls", args.tls or bool(args.tls_cert) or None), ("tls_cert", args.tls_cert),
                                 ("tls_key", args.tls_key)) if v is not None}
    emb = msgspec.structs.replace(emb, **changes)
    emb = with_cluster_args(emb, args)

    async def serve() -> int:
        stop = stop_on_signals()
        async with NatsServer(emb, prefix=config.nats.prefix) as server:
            if server.config.auth:
                await prepare_streams(server, config)
                print(f"authentication on: credentials in {server.auth_dir} (`voxbus creds new --role ROLE -o FILE`)")
            if server.config.tls:
                ca = f" --tls-ca {server.tls_ca}" if server.tls_ca else " (verify it with your certificate's CA)"
                print(f"TLS on: clients connect with{ca}")
            if server.config.cluster:
                c = server.config.cluster
                print(f"cluster {c.name}: routes on {server.config.host}:{c.port}, to {', '.join(c.routes) or 'none yet'}")
            print(f"nats-server ready: {server.url}  (JetStream store {server.store_dir}, "
                  f"monitoring http://127.0.0.1:{server.monitor_port}, pid {server.pid})", flush=True)
            print("Ctrl-C to stop.", flush=True)
            stopped = asyncio.create_task(asyncio.to_thread(server.process.wait))  # type: ignore[union-attr]
            waiter = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait({stopped, waiter}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if stopped in done:
                print(f"nats-server exited unexpectedly (code {stopped.result()})", flush=True)
                return 1
        print("nats-server stopped.", flush=True)
        return 0

    return run_async(serve)


def with_cluster_args(emb, args: argparse.Namespace):
    """The embedded server's cluster settings with the command line's on top; --routes turns it on."""
    from voxbus.config.schema import ClusterConfig

    given = {k: v for k, v in (("routes", args.routes and [r.strip() for r in args.routes.split(",") if r.strip()]),
                               ("port", args.cluster_port), ("name", args.cluster_name),
                               ("server_name", args.server_name)) if v}
    if not given and emb.cluster is None:
        return emb
    return msgspec.structs.replace(emb, cluster=msgspec.structs.replace(emb.cluster or ClusterConfig(), **given))


async def prepare_streams(server: NatsServer, config) -> None:
    """With auth on, only the operator may create streams: the server's launcher makes them (and
    the services' STATE bucket) with its own operator credential."""
    from voxbus.bus import Bus, connect
    from voxbus.auth.users import UserRegistry
    from voxbus.consumer_floors import state_bucket
    from voxbus.tenancy import provision
    from voxbus.streams import ensure_streams
    from voxbus.subjects import Subjects

    nc = await connect(server.url, "voxbus-server", float(config.nats.connect_timeout), str(server.own_seed),
                       str(server.tls_ca) if server.tls_ca else config.nats.tls_ca)
    try:
        subjects = Subjects(config.nats.prefix)
        await ensure_streams(nc.jetstream(), subjects, config.streams, config.stt)
        bus = Bus(nc=nc, js=nc.jetstream(), subjects=subjects, config=config)
        await state_bucket(bus)
        for tenant, quota in UserRegistry(server.auth_dir, subjects).tenants().items():
            await provision(bus, tenant, quota)
    finally:
        await nc.close()
