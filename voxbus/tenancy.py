"""Serving every tenant: each tenant's streams provisioned by the operator, and one instance of
each service per tenant in every service process.

The deployment's tenants are the keys of a Key-Value bucket (`<PREFIX>_TENANTS`, value: the
quota in bytes) that only the operator writes (`voxbus creds new --tenant`, and the `--auth`
server at start). A service process reads it, starts its services for each tenant on a Bus of
that tenant's prefix (the same connection), and looks again every few seconds for tenants
added since (auth/tenants.py says what a tenant is).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Callable

import msgspec
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError, NoKeysError

from voxbus.auth.tenants import tenant_streams, tenant_subjects
from voxbus.bus import Bus
from voxbus.consumer_floors import state_bucket
from voxbus.service_base import BusService
from voxbus.streams import ensure_streams

log = logging.getLogger(__name__)

LOOK_EVERY_S = 5.0
START_ATTEMPTS = 10
"""A tenant added a moment ago may not be in the server's permissions yet (it reloads them
asynchronously): starting its services is tried again for a few seconds."""
TENANTS_BUCKET_BYTES = 1 << 20


def tenant_bus(bus: Bus, tenant: str) -> Bus:
    """The same connection, speaking in the tenant's prefix."""
    subjects = tenant_subjects(bus.subjects, tenant)
    config = msgspec.structs.replace(bus.config, nats=msgspec.structs.replace(bus.config.nats, prefix=subjects.prefix))
    return dataclasses.replace(bus, subjects=subjects, config=config)


async def provision(bus: Bus, tenant: str, quota: int) -> None:
    """Operator only: the tenant's streams (sized from its quota), its STATE bucket, and its entry
    in the tenants bucket, so services start serving it."""
    tb = tenant_bus(bus, tenant)
    await ensure_streams(bus.js, tb.subjects, tenant_streams(bus.config.streams, quota), bus.config.stt)
    await state_bucket(tb)
    name = bus.subjects.tenants_bucket()
    try:
        kv = await bus.js.key_value(name)
    except BucketNotFoundError:
        kv = await bus.js.create_key_value(KeyValueConfig(
            bucket=name, history=1, storage=StorageType.FILE, replicas=bus.config.streams.replicas,
            max_bytes=TENANTS_BUCKET_BYTES,
            description="voxbus: the deployment's tenants (value: storage quota in bytes)"))
    await kv.put(tenant, str(int(quota)).encode())
    log.info("tenant %s: streams under prefix %s, quota %d bytes", tenant, tb.subjects.prefix, quota)


async def known_tenants(bus: Bus) -> list[str]:
    try:
        kv = await bus.js.key_value(bus.subjects.tenants_bucket())
        return sorted(await kv.keys())
    except (BucketNotFoundError, NoKeysError):
        return []


class TenantServices:
    """Runs `factories` (each: a Bus -> a service) for every tenant, as tenants come."""

    def __init__(self, bus: Bus, factories: list[Callable[[Bus], BusService]]) -> None:
        self.bus, self.factories = bus, factories
        self.running: dict[str, list[BusService]] = {}
        self._watch: asyncio.Task | None = None

    async def start(self) -> "TenantServices":
        await self._look()
        self._watch = asyncio.create_task(self._keep_looking(), name="tenants")
        return self

    async def _keep_looking(self) -> None:
        while True:
            await asyncio.sleep(LOOK_EVERY_S)
            try:
                await self._look()
            except Exception:  # a reconnect, say: the next look tries again
                log.exception("looking for new tenants failed")

    async def _look(self) -> None:
        for tenant in await known_tenants(self.bus):
            if tenant not in self.running:
                await self._serve(tenant)

    async def _serve(self, tenant: str) -> None:
        tb = tenant_bus(self.bus, tenant)
        for attempt in range(START_ATTEMPTS):
            services = [factory(tb) for factory in self.factories]
            started = []
            try:
                for service in services:
                    await service.start()
                    started.append(service)
            except Exception as exc:
                for service in reversed(started):
                    await service.stop()
                if attempt == START_ATTEMPTS - 1:
                    log.error("tenant %s: could not start its services: %s", tenant, exc)
                    return
                await asyncio.sleep(0.5)
                continue
            self.running[tenant] = services
            log.info("serving tenant %s (%s)", tenant, ", ".join(type(s).__name__ for s in services))
            return

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
        for services in self.running.values():
            for service in reversed(services):
                await service.stop()
        self.running.clear()

    async def __aenter__(self) -> "TenantServices":
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop()
