"""The ModelManager process: a NATS micro service (discoverable via $SRV.PING/INFO/STATS) in a
queue group, so several managers share the load; plus the idle reaper and resource snapshots.

Endpoint callbacks only spawn a task and return: nats-py runs one subscription's callbacks one
after another, so awaiting inference there would serialise every request to that endpoint and
make cross-session batching impossible.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import uuid
from pathlib import Path
from typing import Any, Awaitable, Callable

import platformdirs
from nats.aio.msg import Msg
from nats.micro import Request, ServiceConfig, add_service
from nats.micro.service import EndpointStats, Service

from voxbus import __version__
from voxbus.bus import Bus
from voxbus.errors import BadRequest, ModelError, ModelFailed, PayloadTooLarge, ProtocolError
from voxbus.manager.cancels import Cancellations
from voxbus.manager.endpoints import Endpoints
from voxbus.manager.events import AdminPublisher
from voxbus.manager.pool import ModelPool
from voxbus.manager.replies import ReplyChannel
from voxbus.manager.resources import Resources
from voxbus.messages import codec
from voxbus.messages.admin import LoadedModelStats, ResourceSnapshot
from voxbus.messages.model import GenerateCancel

log = logging.getLogger(__name__)

Handler = Callable[[Msg, ReplyChannel], Awaitable[None]]


class ModelManager:
    """``async with ModelManager(bus) as manager: ...`` or ``await start()`` / ``await stop()``."""

    def __init__(self, bus: Bus, *, manager_id: str | None = None) -> None:
        self.bus = bus
        self.config = bus.config
        self.id = manager_id or f"{socket.gethostname()}-{uuid.uuid4().hex[:6]}"
        mc = self.config.manager
        self.cache_dir = Path(mc.cache_dir).expanduser() if mc.cache_dir else Path(platformdirs.user_cache_dir("voxbus"))
        self.resources: Resources | None = None
        self.pool: ModelPool | None = None
        self.events: AdminPublisher | None = None
        self.service: Service | None = None
        self._tasks: set[asyncio.Task] = set()
        self._loops: list[asyncio.Task] = []
        self._endpoint_errors: dict[str, int] = {}
        self._endpoint_inflight: dict[str, int] = {}
        self._stopping = False
        self.cancels = Cancellations()
        self._subs: list = []

    async def start(self) -> "ModelManager":
        subjects = self.bus.subjects
        self.resources = Resources()
        self.events = AdminPublisher(self.bus.nc, subjects, self.id)
        self.pool = ModelPool(self.config, self.resources, self.events, self.cache_dir)
        api = Endpoints(self)
        self.service = await add_service(self.bus.nc, ServiceConfig(
            name=subjects.service_name(), version=__version__,
            description="voxbus ModelManager: every model behind one NATS service",
            metadata={"manager": self.id}, queue_group=subjects.queue_group("manager"),
            stats_handler=self._endpoint_stats,
        ))
        routes: list[tuple[str, str, Handler]] = [
            ("stt", "transcribe", api.transcribe), ("llm", "generate", api.generate),
            ("tts", "synthesize", api.synthesize), ("admin", "list", api.list_models),
            ("admin", "load", api.load), ("admin", "unload", api.unload),
        ]
        for kind, verb, handler in routes:
            await self.service.add_endpoint(name=f"{kind}-{verb}", subject=subjects.model(kind, verb),
                                            handler=self._spawner(f"{kind}-{verb}", handler))
        # Not micro endpoints: a stop must reach every manager, not one of the queue group.
        self._subs = [await self.bus.nc.subscribe(subjects.all_control("interrupt"), cb=self._on_interrupt),
                      await self.bus.nc.subscribe(subjects.model("llm", "cancel"), cb=self._on_cancel)]
        self._loops = [asyncio.create_task(self._reaper()), asyncio.create_task(self._snapshots())]
        log.info("model manager %s serving %d models on %s.model.*", self.id, len(self.pool.slots), subjects.prefix)
        return self

    async def stop(self, drain_timeout: float = 30.0) -> None:
        """Stop taking requests, let running ones finish, unload everything. Safe to call twice."""
        if self._stopping:
            return
        self._stopping = True
        for sub in self._subs:
            await sub.unsubscribe()
        if self.service is not None:
            await self.service.stop()
        for task in self._loops:
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=drain_timeout)
        if self.pool is not None:
            await self.pool.close()
        if self.resources is not None:
            self.resources.close()

    async def __aenter__(self) -> "ModelManager":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- request plumbing ---------------------------------------------------------------------
    def _spawner(self, name: str, handler: Handler) -> Callable[[Request], Awaitable[None]]:
        async def spawn(request: Request) -> None:
            msg = request._msg  # the micro Request wraps the raw message we need (headers, reply)
            if not msg.reply:
                return
            task = asyncio.create_task(self._serve(name, handler, msg))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        return spawn

    async def _serve(self, name: str, handler: Handler, msg: Msg) -> None:
        channel = ReplyChannel(self.bus.nc, msg.reply)
        self._endpoint_inflight[name] = self._endpoint_inflight.get(name, 0) + 1
        try:
            async with channel.heartbeats(self.config.client.heartbeat):
                if len(msg.data) > self.config.manager.max_request_bytes:
                    raise PayloadTooLarge(f"request is {len(msg.data)} bytes; this manager takes at most "
                                          f"{self.config.manager.max_request_bytes} (manager.max_request_bytes)")
                await handler(msg, channel)
        except ModelError as exc:
            self._count_error(name)
            await channel.error(exc)
        except ProtocolError as exc:
            self._count_error(name)
            await channel.error(BadRequest(str(exc)))
        except Exception as exc:  # a bug or a library failure: answer, log, keep serving
            self._count_error(name)
            log.exception("%s failed", name)
            await channel.error(ModelFailed(f"{type(exc).__name__}: {exc}"))
        finally:
            self._endpoint_inflight[name] -= 1

    def _count_error(self, name: str) -> None:
        self._endpoint_errors[name] = self._endpoint_errors.get(name, 0) + 1

    def _endpoint_stats(self, stats: EndpointStats) -> Any:
        return {"errors": self._endpoint_errors.get(stats.name, 0), "inflight": self._endpoint_inflight.get(stats.name, 0)}

    async def _on_interrupt(self, msg: Msg) -> None:
        session = self.bus.subjects.session_from(msg.subject)
        if self.cancels.cancel_session(session):
            log.info("interrupt: stopping generation for session %s", session)

    async def _on_cancel(self, msg: Msg) -> None:
        try:
            self.cancels.cancel_request(codec.decode(msg.data, GenerateCancel).request_id)
        except ProtocolError as exc:
            log.warning("ignoring a malformed cancel: %s", exc)

    # -- background loops ---------------------------------------------------------------------
    async def _reaper(self) -> None:
        ttls = [s.spec.ttl for s in self.pool.slots.values() if s.spec.ttl] + [self.config.manager.idle_ttl]
        period = max(0.2, min(10.0, min(t for t in ttls if t > 0) / 4)) if any(t > 0 for t in ttls) else 10.0
        while True:
            await asyncio.sleep(period)
            try:
                await self.pool.unload_idle()
            except Exception:
                log.exception("idle reaper")

    def snapshot(self) -> ResourceSnapshot:
        ram_budget, vram_budget = self.pool.budgets()
        models = [LoadedModelStats(id=s.id, kind=s.spec.kind, ram_bytes=s.ram, vram_bytes=s.vram,
                                   inflight=s.inflight, idle_s=round(s.idle_seconds(), 1))
                  for s in self.pool.slots.values() if s.loaded]
        used_ram = sum(m.ram_bytes for m in models)
        used_vram = sum(m.vram_bytes for m in models)
        return ResourceSnapshot(
            gpus=self.resources.gpus(), rss_bytes=self.resources.rss(),
            ram_total_bytes=self.resources.ram_total(), ram_available_bytes=self.resources.ram_available(),
            ram_budget_bytes=ram_budget, vram_budget_bytes=vram_budget, models=models,
            pressure=used_ram > 0.9 * ram_budget or (vram_budget > 0 and used_vram > 0.9 * vram_budget),
        )

    async def _snapshots(self) -> None:
        while True:
            try:
                await self.events.snapshot(await asyncio.to_thread(self.snapshot))
            except Exception:
                log.exception("resource snapshot")
            await asyncio.sleep(self.config.manager.snapshot_interval)
