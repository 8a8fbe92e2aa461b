"""The credentials of an embedded server with auth on: who may connect, in which role.

Each user is an nkey pair. The seed (the secret) goes only to the file `voxbus creds new -o`
writes, mode 0600; the registry (`<auth dir>/users.json`, also 0600) keeps the public key, the
role and when it was made or revoked. From the registry the server's accounts block is written
(`<auth dir>/accounts.conf`): one user per public key with its role's permissions, and no
`no_auth_user`, so a connection without credentials is refused. The server reloads it on SIGHUP,
which also disconnects a revoked user.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import nkeys

from voxbus.auth.roles import ROLES, permissions
from voxbus.auth.tenants import mapped_targets, model_mappings, tenant_subjects
from voxbus.errors import ConfigError
from voxbus.subjects import Subjects

ACCOUNT = "VOXBUS"
MARKER = "# ---- accounts:"
"""Where the bundled nats-server.conf's open accounts block starts (auth mode writes its own)."""
SERVER_USER = "voxbus-server"
"""The operator credential the embedded server's own launcher uses (to create the streams)."""


@dataclass
class User:
    name: str
    role: str
    public_key: str
    created: float
    revoked: float | None = None
    tenant: str | None = None


def bundled_parts(conf_text: str | None = None) -> tuple[str, str]:
    """The bundled server config without its open accounts block, and that account's
    `jetstream { ... }` limits (an auth server keeps both)."""
    text = conf_text or resources.files("voxbus").joinpath("nats-server.conf").read_text()
    base, _, accounts = text.partition(MARKER)
    limits = re.search(r"jetstream:\s*\{[^}]*\}", accounts)
    if not accounts or limits is None:
        raise ConfigError("the nats-server config has no voxbus accounts block to replace for --auth")
    return base, limits.group(0)


def new_seed() -> bytes:
    return nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)


def public_key_of(seed: bytes) -> str:
    return nkeys.from_seed(bytearray(seed)).public_key.decode()


def write_secret(path: Path, data: bytes) -> None:
    """Create (or replace) a file readable by its owner only, never world-readable in between."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(tmp, path)


class UserRegistry:
    def __init__(self, auth_dir: Path, subjects: Subjects, account_limits: str | None = None) -> None:
        self.dir, self.subjects = Path(auth_dir), subjects
        self.path = self.dir / "users.json"
        self.limits = account_limits or bundled_parts()[1]

    @property
    def tenants_path(self) -> Path:
        return self.dir / "tenants.json"

    def tenants(self) -> dict[str, int]:
        """Tenant name -> storage quota in bytes."""
        try:
            return {name: int(quota) for name, quota in json.loads(self.tenants_path.read_text()).items()}
        except FileNotFoundError:
            return {}

    def add_tenant(self, name: str, quota: int) -> None:
        tenant_subjects(self.subjects, name)  # (validates the name)
        tenants = self.tenants()
        tenants[name] = int(quota)
        write_secret(self.tenants_path, json.dumps(tenants, indent=1).encode())
        self._save(self.users())

    def users(self) -> list[User]:
        try:
            rows = json.loads(self.path.read_text())
        except FileNotFoundError:
            return []
        return [User(**row) for row in rows]

    def _save(self, users: list[User]) -> None:
        write_secret(self.path, json.dumps([asdict(u) for u in users], indent=1).encode())
        write_secret(self.dir / "accounts.conf", self.accounts_conf(users).encode())

    def add(self, name: str, role: str, tenant: str | None = None) -> bytes:
        """A new user; returns its seed (the caller writes it where the user wants it)."""
        if role not in ROLES:
            raise ConfigError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
        if tenant is not None and (role != "client" or tenant not in self.tenants()):
            raise ConfigError(f"tenant {tenant!r}: only a client belongs to a tenant, and the tenant must exist "
                              f"(give --quota to create it)" if role == "client" else
                              f"a {role} serves every tenant; only a client belongs to one")
        users = self.users()
        if any(u.name == name and u.revoked is None for u in users):
            raise ConfigError(f"a user named {name!r} exists already (revoke it first, or pick another name)")
        seed = new_seed()
        users.append(User(name=name, role=role, public_key=public_key_of(seed), created=time.time(), tenant=tenant))
        self._save(users)
        return seed

    def revoke(self, name: str) -> User:
        users = self.users()
        for u in users:
            if u.name == name and u.revoked is None:
                u.revoked = time.time()
                self._save(users)
                return u
        raise ConfigError(f"no active user named {name!r} (see `voxbus creds list`)")

    def role_seed(self, name: str, role: str) -> Path:
        """A credential kept in the auth dir for a service `voxbus up --auth` runs (made on first
        use, reused after); its path."""
        path = self.dir / f"{name}.nk"
        active = {u.name: u for u in self.users() if u.revoked is None}
        if not (path.exists() and name in active and active[name].public_key == public_key_of(path.read_bytes())):
            if name in active:
                self.revoke(name)
            write_secret(path, self.add(name, role))
        return path

    def server_seed(self) -> bytes:
        """The launcher's own operator credential, made on first use."""
        path = self.dir / f"{SERVER_USER}.nk"
        if not path.exists():
            write_secret(path, self.add(SERVER_USER, "operator"))
        elif not self.path.exists():  # (a registry removed by hand: the key is registered again)
            raise ConfigError(f"{self.path} is missing but {path} exists: remove {self.dir} to start over")
        return path.read_bytes()

    def accounts_conf(self, users: list[User] | None = None) -> str:
        users = [u for u in (self.users() if users is None else users) if u.revoked is None]
        tenants = [tenant_subjects(self.subjects, t) for t in self.tenants()]
        rows = [f"      {{ nkey: {u.public_key}, permissions: "
                f"{json.dumps(self._permissions(u, tenants))} }}  # {u.name} ({u.role}{', ' + u.tenant if u.tenant else ''})"
                for u in users]
        maps = {src: dst for t in tenants for src, dst in model_mappings(self.subjects, t).items()}
        mappings = "".join(f'      "{src}": "{dst}"\n' for src, dst in maps.items())
        body = "\n".join(rows)
        return (f"# Written by voxbus from {self.path.name}; edit with `voxbus creds`.\n"
                f"accounts {{\n  {ACCOUNT}: {{\n"
                f"    {self.limits}\n"
                f"    users: [\n{body}\n    ]\n"
                + (f"    mappings: {{\n{mappings}    }}\n" if mappings else "")
                + "  }\n}\n")

    def _permissions(self, user: User, tenants: list[Subjects]) -> dict:
        """A tenant's client: the client role in its tenant's prefix, and the model subjects its
        mapping leads to. A service: its role in the deployment's prefix and in every tenant's."""
        if user.tenant is not None:
            own = tenant_subjects(self.subjects, user.tenant)
            perms = permissions("client", own, user.public_key)
            perms["publish"]["allow"] += mapped_targets(self.subjects)
            return perms
        perms = permissions(user.role, self.subjects, user.public_key)
        if user.role in ("stt", "tts", "assistant"):
            for t in tenants:
                more = permissions(user.role, t, user.public_key)
                for direction in ("publish", "subscribe"):
                    perms[direction]["allow"] += [x for x in more[direction]["allow"] if x not in perms[direction]["allow"]]
        return perms
