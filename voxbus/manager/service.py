"""The ModelManager process: a supervisor of model worker processes behind one NATS micro service
(discoverable via $SRV.PING/INFO/STATS) in a queue group, so several managers share the load;
plus the idle reaper and resource snapshots.

The manager decides routing, admission and eviction and holds every request's queue; each loaded
model runs in worker processes of its own (voxbus/manager/worker.py), so a native crash in a model
library costs that model's running request, not the manager.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import uuid
from pathlib import Path
from typing import Awaitable, Callable

import platformdirs
from nats.aio.msg import Msg

from voxbus import __version__
from voxbus.bus import Bus
from voxbus.errors import BadRequest, ModelError, ModelFailed, PayloadTooLarge, ProtocolError
from voxbus.manager.cancels import Cancellations
from voxbus.manager.endpoints import Endpoints
from voxbus.manager.events import AdminPublisher
from voxbus.manager.pool import ModelPool
from voxbus.manager.requests import SHUTDOWN, RequestContext, RequestTracker
from voxbus.manager.resources import Resources
from voxbus.messages import codec
from voxbus.messages.admin import LoadedModelStats, ResourceSnapshot
from voxbus.messages.model import GenerateCancel
from voxbus.micro import Endpoint, MicroService

log = logging.getLogger(__name__)

Handler = Callable[[Msg, RequestContext], Awaitable[None]]


class ModelManager:
    """``async with ModelManager(bus) as manager: ...`` or ``await start()`` / ``await stop()``."""

    def __init__(self, bus: Bus, *, manager_id: str | None = None) -> None:
        self.bus = bus
        self.config = bus.config
        self.id = manager_id or f"{re.sub(r'[^A-Za-z0-9_-]', '-', socket.gethostname())}-{uuid.uuid4().hex[:6]}"
        bus.subjects.model_at("llm", "generate", self.id)  # an id no subject can hold is refused here, clearly
        mc = self.config.manager
        self.cache_dir = Path(mc.cache_dir).expanduser() if mc.cache_dir else Path(platformdirs.user_cache_dir("voxbus"))
        self.resources: Resources | None = None
        self.pool: ModelPool | None = None
        self.events: AdminPublisher | None = None
        self.service: MicroService | None = None
        self.requests: RequestTracker | None = None
        self.cancels = Cancellations()
        self._loops: list[asyncio.Task] = []
        self._subs: list = []
        self._stopping = False

    async def start(self) -> "ModelManager":
        subjects, nc = self.bus.subjects, self.bus.nc
        self.resources = Resources()
        self.events = AdminPublisher(nc, subjects, self.id)
        self.pool = ModelPool(self.config, self.resources, self.events, self.cache_dir)
        self.requests = RequestTracker(nc, float(self.config.client.heartbeat), self.id)
        await self.requests.start()
        api = Endpoints(self.pool, self.cancels, self.config, manager_id=self.id, nc=nc,
                        upload_bucket=subjects.upload_bucket())
        self.service = MicroService(
            nc, name=subjects.service_name(), version=__version__,
            description="voxbus ModelManager: every model behind one NATS service",
            metadata={"manager": self.id, "pid": str(os.getpid()), "host": socket.gethostname()}, queue_group=subjects.queue_group("manager"),
            stats_data=self._endpoint_data)
        await self.service.start()
        routes: list[tuple[str, str, Handler]] = [
            ("stt", "transcribe", api.transcribe), ("llm", "generate", api.generate),
            ("tts", "synthesize", api.synthesize), ("admin", "list", api.list_models),
            ("admin", "load", api.load), ("admin", "unload", api.unload),
        ]
        for kind, verb, handler in routes:
            await self.service.add_endpoint(f"{kind}-{verb}", subjects.model(kind, verb), self._handler(f"{kind}-{verb}", handler))
        # This manager's own generate subject: a conversation's later turns come here, to its KV state.
        await self.service.add_endpoint("llm-generate-here", subjects.model_at("llm", "generate", self.id),
                                        self._handler("llm-generate", api.generate))
        # ...and its own model list: metrics read every manager's counters, not one of the group's.
        await self.service.add_endpoint("admin-list-here", subjects.model_at("admin", "list", self.id),
                                        self._handler("admin-list", api.list_models))
        # Not micro endpoints: a stop must reach every manager, not one of the queue group.
        self._subs = [await nc.subscribe(subjects.all_control("interrupt"), cb=self._on_interrupt),
                      await nc.subscribe(subjects.model("llm", "cancel"), cb=self._on_cancel)]
        self._loops = [asyncio.create_task(self._reaper()), asyncio.create_task(self._snapshots())]
        log.info("model manager %s serving %d models on %s.model.*", self.id, len(self.pool.slots), subjects.prefix)
        return self

    async def stop(self, drain_timeout: float = 30.0) -> None:
        """Stop taking requests, let running ones finish (generations stop at their next token),
        end every worker. Safe to call twice."""
        if self._stopping:
            return
        self._stopping = True
        for sub in self._subs:
            try:
                await sub.unsubscribe()
            except Exception as exc:
                log.debug("unsubscribe: %s", exc)
        if self.service is not None:
            await self.service.stop_intake()
            self.requests.cancel_all("llm-generate", SHUTDOWN)
            await self.service.drain(drain_timeout)
            await self.service.stop()
        for task in self._loops:
            task.cancel()
        if self.requests is not None:
            await self.requests.stop()
        if self.pool is not None:
            await self.pool.close()
        if self.resources is not None:
            self.resources.close()

    async def __aenter__(self) -> "ModelManager":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- request plumbing ---------------------------------------------------------------------
    def _handler(self, name: str, handler: Handler) -> Callable[[Msg], Awaitable[str | None]]:
        async def serve(msg: Msg) -> str | None:
            if not msg.reply:
                return None
            ctx, joined = self.requests.begin(msg, name)
            if joined:  # a retry of a request still in progress: its answer now goes here
                await self.requests.join(ctx, msg)
                return None
            try:
                await self.requests.accepted(ctx)
                if len(msg.data) > self.config.manager.max_request_bytes:
                    raise PayloadTooLarge(f"request is {len(msg.data)} bytes; this manager takes at most "
                                          f"{self.config.manager.max_request_bytes} (manager.max_request_bytes)")
                await handler(msg, ctx)
                return None
            except ModelError as exc:
                await ctx.error(exc)
                return f"{exc.code}: {exc.message}"
            except ProtocolError as exc:
                await ctx.error(BadRequest(str(exc)))
                return f"bad_request: {exc}"
            except Exception as exc:  # a bug: answer, log, keep serving
                log.exception("%s failed", name)
                await ctx.error(ModelFailed(f"{type(exc).__name__}: {exc}"))
                return f"model_failed: {type(exc).__name__}"
            finally:
                self.requests.end(ctx)

        return serve

    def _endpoint_data(self, endpoint: Endpoint) -> dict:
        return {"in_flight": endpoint.in_flight}

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
        for s in self.pool.slots.values():
            if s.loaded:
                self.pool.loader.measure(s)
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
                await self.events.snapshot(self.snapshot())
            except Exception:
                log.exception("resource snapshot")
            await asyncio.sleep(self.config.manager.snapshot_interval)
