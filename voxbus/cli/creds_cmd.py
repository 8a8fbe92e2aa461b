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
            print(f"{u.name:<24} {u.role:<10} {u.public_key}  {time.strftime('%Y-%m-%d %H:%M', time.localtime(u.created))}  {state}")
        return 0
    if args.creds_command == "revoke":
        user = registry.revoke(args.name)
        print(f"revoked {user.name} ({user.role}, {user.public_key}); {_reload(store)}")
        return 0
    out = Path(args.output).expanduser()
    if out.exists():
        print(f"voxbus: {out} exists; not overwriting a credential", file=sys.stderr)
        return 1
    seed = registry.add(args.name or f"{args.role}-{secrets.token_hex(3)}", args.role)
    write_secret(out, seed)
    public = public_key_of(seed)
    print(f"wrote {out} (role {args.role}, public key {public}); {_reload(store)}")
    print(f"  voxbus:  voxbus <command> --creds {out}   (or VOXBUS_NATS_CREDS={out})")
    print(f"  nats-py: nats.connect(URL, nkeys_seed='{out}', inbox_prefix='{inbox_prefix(public)}')")
    print(f"  nats CLI: nats --nkey {out} --inbox-prefix {inbox_prefix(public)} ...")
    return 0


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
