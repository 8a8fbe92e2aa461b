"""`voxbus creds new|list|revoke`: the credentials of an embedded server with auth on."""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
import time
from pathlib import Path


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    from voxbus.auth.roles import ROLES

    p = sub.add_parser("creds", parents=[common], help="make, list or revoke credentials (voxbus server --auth)",
                       description="Credentials of the embedded server's users, one role each. A running "
                                   "server picks changes up at once; a revoked user is disconnected.")
    csub = p.add_subparsers(dest="creds_command", metavar="ACTION", required=True)
    new = csub.add_parser("new", parents=[common], help="a new user: writes its nkey seed to FILE (mode 0600)")
    new.add_argument("--role", required=True, choices=ROLES)
    new.add_argument("--name", help="a name to list and revoke it by (default: ROLE-<random>)")
    new.add_argument("-o", "--output", required=True, metavar="FILE", help="where to write the seed (a secret)")
    new.add_argument("--tenant", help="a client of this tenant only (its own sessions, streams and quota)")
    new.add_argument("--quota", type=_size, metavar="SIZE",
                     help="create the tenant with this storage quota (e.g. 2GiB); its streams refuse audio past it")
    csub.add_parser("list", parents=[common], help="every user: name, role, public key, created, revoked")
    revoke = csub.add_parser("revoke", parents=[common], help="revoke a user by name")
    revoke.add_argument("name")
    for parser in csub.choices.values():
        parser.add_argument("--store-dir", help="the server's JetStream store (default: the user data dir)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from voxbus.auth.roles import inbox_prefix
    from voxbus.auth.users import UserRegistry, public_key_of, write_secret
    from voxbus.cli import load_for
    from voxbus.server import default_store_dir
    from voxbus.subjects import Subjects

    config = load_for(args)
    store = Path(args.store_dir or config.nats.embedded.store_dir or default_store_dir()).expanduser()
    registry = UserRegistry(store / "auth", Subjects(config.nats.prefix))
    if args.creds_command == "list":
        users = registry.users()
        if not users:
            print(f"no credentials in {registry.dir} (start the server with `voxbus server --auth`)")
        for u in users:
            state = f"revoked {time.strftime('%Y-%m-%d %H:%M', time.localtime(u.revoked))}" if u.revoked else "active"
            tenant = f"tenant {u.tenant}" if u.tenant else "all tenants" if u.role != "client" else "no tenant"
            print(f"{u.name:<24} {u.role:<10} {tenant:<16} {u.public_key}  "
                  f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(u.created))}  {state}")
        return 0
    if args.creds_command == "revoke":
        user = registry.revoke(args.name)
        print(f"revoked {user.name} ({user.role}, {user.public_key}); {_reload(store)}")
        return 0
    out = Path(args.output).expanduser()
    if out.exists():
        print(f"voxbus: {out} exists; not overwriting a credential", file=sys.stderr)
        return 1
    if args.tenant and args.quota is not None:
        registry.add_tenant(args.tenant, args.quota)
        print(_provision(store, config, args.tenant, args.quota))
    seed = registry.add(args.name or f"{args.role}-{secrets.token_hex(3)}", args.role, args.tenant)
    write_secret(out, seed)
    public = public_key_of(seed)
    print(f"wrote {out} (role {args.role}, public key {public}); {_reload(store)}")
    print(f"  voxbus:  voxbus <command> --creds {out}   (or VOXBUS_NATS_CREDS={out})")
    print(f"  nats-py: nats.connect(URL, nkeys_seed='{out}', inbox_prefix='{inbox_prefix(public)}')")
    print(f"  nats CLI: nats --nkey {out} --inbox-prefix {inbox_prefix(public)} ...")
    return 0


def _size(text: str) -> int:
    from voxbus.config.units import ByteSize

    try:
        return int(msgspec_convert(text, ByteSize))
    except Exception:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 512MiB, 2GiB)") from None


def msgspec_convert(text: str, tp):
    import msgspec

    from voxbus.config.units import dec_hook

    return msgspec.convert(text, tp, dec_hook=dec_hook)


def _running(store: Path) -> tuple[int, str] | None:
    """(pid, client URL) of the embedded server running on this store, if one is."""
    import json

    for ports in (store / "ports").glob("nats-server_*.ports"):
        try:
            pid = int(ports.stem.rsplit("_", 1)[1])
            os.kill(pid, 0)
            return pid, json.loads(ports.read_text())["nats"][0]
        except (ValueError, KeyError, IndexError, OSError):
            continue
    return None


def _provision(store: Path, config, tenant: str, quota: int) -> str:
    """Make the tenant's streams now on the running server (with its operator credential)."""
    import asyncio

    running = _running(store)
    if running is None:
        return f"tenant {tenant}: quota {quota} bytes; its streams are made when the server starts with --auth"
    _reload(store)

    async def make() -> None:
        from voxbus.bus import Bus, connect
        from voxbus.subjects import Subjects
        from voxbus.tenancy import provision

        seed, ca = store / "auth" / "voxbus-server.nk", store / "tls" / "ca.pem"
        for attempt in range(50):  # (the server reads the new account settings asynchronously)
            try:
                nc = await connect(running[1], "voxbus-creds", 5.0, str(seed), str(ca) if ca.exists() else None)
                break
            except Exception:
                if attempt == 49:
                    raise
                await asyncio.sleep(0.1)
        try:
            await provision(Bus(nc=nc, js=nc.jetstream(), subjects=Subjects(config.nats.prefix), config=config),
                            tenant, quota)
        finally:
            await nc.close()
    asyncio.run(make())
    return f"tenant {tenant}: quota {quota} bytes; its streams are ready"


def _reload(store: Path) -> str:
    """SIGHUP the embedded server running on this store, if one is (it reads its users again)."""
    for ports in (store / "ports").glob("nats-server_*.ports"):
        try:
            pid = int(ports.stem.rsplit("_", 1)[1])
            os.kill(pid, signal.SIGHUP)
            return f"the running server (pid {pid}) has it now"
        except (ValueError, ProcessLookupError, PermissionError):
            continue
    return "a server started with --auth on this store will use it"
