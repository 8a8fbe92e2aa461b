"""Connecting to NATS the voxbus way: --nats URL, else $VOXBUS_NATS_URL (folded into config),
else the embedded server: reuse one already listening on its port, or start one and own it."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from urllib.parse import urlsplit
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import AsyncIterator

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import PubAck
from nats.js.errors import NotFoundError

from voxbus.auth.roles import inbox_prefix
from voxbus.auth.users import public_key_of
from voxbus.auth.tls import client_context
from voxbus.auth.violations import Violations
from voxbus.config.schema import Config
from voxbus.errors import ConfigError, ServerError
from voxbus.server import NatsServer, port_in_use
from voxbus.streams import ensure_streams
from voxbus.subjects import STREAM_FAMILIES, Subjects

log = logging.getLogger(__name__)

HEAL_EVERY_S = 2.0


@dataclass
class Bus:
    nc: Client
    js: JetStreamContext
    subjects: Subjects
    config: Config
    server: NatsServer | None = None
    """Set when this process started the embedded server (and will stop it)."""

    _healed_at: float = 0.0

    @property
    def url(self) -> str:
        return self.nc.connected_url.geturl() if self.nc.connected_url else ""

    async def store(self, subject: str, data: bytes, headers: dict[str, str] | None = None) -> PubAck:
        """A JetStream publish that puts voxbus's streams back if one went missing (deleted by an
        operator, say): with no stream for the subject nobody answers, and it would stay so."""
        try:
            return await self.js.publish(subject, data, headers=headers)
        except nats.errors.NoRespondersError:
            await self.heal_streams()
            raise  # (the caller's retry finds the stream)

    async def heal_streams(self) -> None:
        """Create any voxbus stream that is missing, at most once per HEAL_EVERY_S."""
        now = time.monotonic()
        if now - self._healed_at < HEAL_EVERY_S:
            return
        self._healed_at = now
        if self.config.nats.creds:  # with auth on only the operator may create streams
            log.error("a stream is missing and these credentials may not create it: ask the operator "
                      "(`voxbus server --auth` creates the streams when it starts)")
            return
        missing = []
        names = [self.subjects.stream(f) for f in STREAM_FAMILIES]
        if self.config.stt.partitions > 1:
            names.append(self.subjects.stt_work_stream())
        for name in names:
            try:
                await self.js.stream_info(name)
            except NotFoundError:
                missing.append(name)
        if missing:
            log.warning("streams %s are missing: creating them again (what they held is gone)", ", ".join(missing))
            await ensure_streams(self.js, self.subjects, self.config.streams, self.config.stt)


async def connect(url: str, name: str, timeout: float = 5.0, creds: str | None = None,
                  tls_ca: str | None = None) -> Client:
    violations = Violations()
    refused = asyncio.Event()

    async def on_error(exc: Exception) -> None:
        if violations.record(exc):
            return
        if isinstance(exc, nats.js.errors.APIError):  # an async publish's failed ack: its publisher reports it
            log.debug("nats: %s", exc)
            return
        if isinstance(exc, nats.errors.AuthorizationError) or "authorization violation" in str(exc).lower():
            refused.set()
        log.warning("nats: %s", exc)

    await _probe(url, timeout)
    # Reconnect forever once connected (services outlive server restarts), but a first connect
    # to a wrong URL, or with credentials the server refuses, must fail with a clear error
    # instead of retrying forever: bound it.
    servers = [u.strip() for u in url.split(",") if u.strip()]  # a cluster: any of its nodes
    attempt = asyncio.ensure_future(nats.connect(
        servers, name=name, connect_timeout=timeout, allow_reconnect=True, max_reconnect_attempts=-1,
        reconnect_time_wait=0.5, error_cb=on_error, **credential_options(creds), **tls_options(tls_ca)))
    gave_up = asyncio.ensure_future(refused.wait())
    try:
        done, _ = await asyncio.wait({attempt, gave_up}, timeout=timeout * 2, return_when=asyncio.FIRST_COMPLETED)
        if attempt in done:
            nc = attempt.result()
            violations.attach(nc)
            return nc
        attempt.cancel()
        if gave_up in done:
            raise ServerError(f"NATS at {url} refused the connection: authorization violation (it needs "
                              f"credentials it knows: --creds FILE or $VOXBUS_NATS_CREDS)")
        raise asyncio.TimeoutError
    except (nats.errors.Error, OSError, asyncio.TimeoutError) as exc:
        reason = str(exc) or ("timed out" if isinstance(exc, asyncio.TimeoutError) else type(exc).__name__)
        raise ServerError(f"cannot reach NATS at {url}: {reason}") from None
    finally:
        gave_up.cancel()


def tls_options(tls_ca: str | None) -> dict:
    context = client_context(tls_ca)
    return {"tls": context} if context is not None else {}


def credential_options(creds: str | None) -> dict:
    """nats.connect options for a credentials file: a .creds file (user JWT and seed), or an
    nkey seed from `voxbus creds new`, whose reply inbox is scoped to its public key."""
    if not creds:
        return {}
    path = Path(creds).expanduser()
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the NATS credentials {path}: {exc.strerror or exc}") from None
    if b"BEGIN NATS USER JWT" in text:
        return {"user_credentials": str(path)}
    try:
        public = public_key_of(text.strip())
    except Exception:
        raise ConfigError(f"{path} is neither an nkey seed (from `voxbus creds new`) nor a NATS .creds file") from None
    return {"nkeys_seed": str(path), "inbox_prefix": inbox_prefix(public)}


async def _probe(url: str, timeout: float) -> None:
    """Fail in milliseconds, saying why, when no server of the URL accepts a TCP connection
    (nats-py would keep retrying a refused first connect until our timeout)."""
    errors = []
    for server in url.split(","):
        parsed = urlsplit(server.strip() if "://" in server else f"nats://{server.strip()}")
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(parsed.hostname, parsed.port or 4222), timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            errors.append(f"{parsed.hostname}:{parsed.port or 4222}: {exc.strerror if isinstance(exc, OSError) and exc.strerror else 'timed out'}")
            continue
        writer.close()
        return
    raise ServerError(f"cannot reach NATS at {url}: {'; '.join(errors)}")


@asynccontextmanager
async def open_bus(config: Config, name: str = "voxbus", *, streams: bool = True, embed: bool = True) -> AsyncIterator[Bus]:
    """Connect (starting the embedded server when needed) and make sure the streams exist.

    embed=False: a command that only talks to running services never starts a server of its own."""
    server = None
    url = config.nats.url
    if url is None:
        emb = config.nats.embedded
        if emb.port and port_in_use(emb.host, emb.port):
            url = f"nats://{emb.host}:{emb.port}"
            log.info("using the nats-server already listening at %s", url)
        elif not embed:
            raise ServerError(f"no NATS server at nats://{emb.host}:{emb.port} and none given with --nats "
                              f"(start one with `voxbus server`)")
        else:
            server = await NatsServer(emb, prefix=config.nats.prefix).start()
            url = server.url
    creds = config.nats.creds or (str(server.own_seed) if server is not None and server.own_seed else None)
    tls_ca = config.nats.tls_ca or (str(server.tls_ca) if server is not None and server.tls_ca else None)
    try:
        nc = await connect(url, name, config.nats.connect_timeout, creds, tls_ca)
        try:
            js = nc.jetstream()
            subjects = Subjects(config.nats.prefix)
            if streams and (creds is None or creds != config.nats.creds):  # (with credentials the streams
                await ensure_streams(js, subjects, config.streams, config.stt)  # are the operator's: `server --auth` makes them)
            yield Bus(nc=nc, js=js, subjects=subjects, config=config, server=server)
        finally:
            if not nc.is_closed:
                try:
                    await nc.drain()
                except Exception as exc:  # a drain on a dead connection must not mask the real error
                    log.debug("drain failed: %s", exc)
                    await nc.close()
    finally:
        if server is not None:
            await server.stop()
