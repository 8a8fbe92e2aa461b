"""The configured models as requests see them: routing, admission of a request to a model's
queue (bounded, in arrival order), running its job on a worker, and idle unloading.

Starting and ending workers, memory admission and crash handling live in loading.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import AsyncIterator, Callable

from voxbus.config.schema import Config
from voxbus.errors import (
    BadRequest, Cancelled, ConfigError, ContextLengthExceeded, ModelBusy, ModelCrashed, ModelError, ModelFailed,
    Overloaded, ShuttingDown, Timeout, UnknownModel, VersionMismatch, WrongKind,
)
from voxbus.manager import worker_protocol as wp
from voxbus.manager.crashes import CrashHistory
from voxbus.manager.events import AdminPublisher
from voxbus.manager.loading import ModelLoader, quarantine_error
from voxbus.manager.quantization import resolve_quantization
from voxbus.manager.requests import CALLER_GONE, DEADLINE, SHUTDOWN, RequestContext
from voxbus.manager.resources import Resources
from voxbus.manager.slot import ModelSlot
from voxbus.manager.work_queue import Outcome
from voxbus.manager.worker import WorkerDied, WorkerFailed

log = logging.getLogger(__name__)


class Withdrawn(Exception):
    """A queued job taken back because its request was cancelled."""


def cancelled_error(ctx: RequestContext) -> ModelError:
    if ctx.cancelled == DEADLINE:
        return Timeout("the request's deadline passed before it was served")
    if ctx.cancelled == CALLER_GONE:
        return Cancelled("the caller went away")
    if ctx.cancelled == SHUTDOWN:  # it never started: another manager can take the retry
        return ShuttingDown("the manager is shutting down; the request did not start")
    return Cancelled(f"cancelled: {ctx.cancelled}")


def job_error(slot: ModelSlot, exc: BaseException) -> ModelError:
    """A worker's answer or death, as the wire error the caller gets."""
    if isinstance(exc, WorkerDied):
        return ModelCrashed(f"{slot.id}: its worker (pid {exc.exit.pid}) was {exc.exit.reason} while serving "
                            f"this request; the next request gets a fresh worker")
    if isinstance(exc, WorkerFailed):
        failed = exc.failed
        if failed.kind == "context_length":
            return ContextLengthExceeded(f"{slot.id}: {failed.message}")
        if failed.kind == "bad_input":
            return BadRequest(f"{slot.id}: {failed.message}")
        return ModelFailed(f"{slot.id} failed: {failed.message}")
    if isinstance(exc, ModelError):
        return exc
    return ModelFailed(f"{slot.id} failed: {type(exc).__name__}: {exc}")


class ModelPool:
    def __init__(self, config: Config, resources: Resources, events: AdminPublisher, cache_dir: Path) -> None:
        self.config = config
        self.resources = resources
        mc = config.manager
        self.slots: dict[str, ModelSlot] = {}
        for model_id, spec in config.models.items():
            # `auto` on a GPU machine is settled at the first load (the library decides).
            device = "cpu" if spec.device == "cpu" or not resources.has_gpu else "cuda"
            try:
                quant = resolve_quantization(spec.backend, spec.quantization, device)
            except ConfigError as exc:
                raise ConfigError(f"models.{model_id}.quantization: {exc}") from None
            self.slots[model_id] = ModelSlot(
                model_id, spec, device, quant, max_queue=spec.max_queue or mc.max_queue.of(spec.kind),
                crashes=CrashHistory(mc.quarantine_after, float(mc.quarantine_window)))
        self.loader = ModelLoader(config, resources, events, cache_dir, self.slots)

    def budgets(self) -> tuple[int, int]:
        return self.loader.budgets()

    # -- routing ----------------------------------------------------------------------------------
    def find(self, model_id: str, version: str | None = None) -> ModelSlot:
        """The slot of a model named by id, whatever its task (admin requests, --preload)."""
        slot = self.slots.get(model_id)
        if slot is None:
            raise UnknownModel(f"unknown model {model_id!r} (configured: {', '.join(sorted(self.slots)) or 'none'})")
        return self.route(model_id, slot.spec.kind, version)

    def route(self, model_id: str | None, kind: str, version: str | None = None) -> ModelSlot:
        """The slot for a request: the named model, or the configured default for the task."""
        if model_id is None:
            model_id = self.config.manager.defaults.get(kind)
            if model_id is None:
                raise UnknownModel(f"no model named and no default {kind} model configured")
        slot = self.slots.get(model_id)
        if slot is None:
            known = ", ".join(sorted(s.id for s in self.slots.values() if s.spec.kind == kind)) or "none"
            raise UnknownModel(f"unknown model {model_id!r} (configured {kind} models: {known})")
        if slot.spec.kind != kind:
            raise WrongKind(f"model {model_id!r} is a {slot.spec.kind} model, not {kind}")
        if version is not None and version != slot.spec.version:
            raise VersionMismatch(f"model {model_id!r} is version {slot.spec.version!r}, not {version!r}")
        return slot

    # -- requests ---------------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def use(self, slot: ModelSlot, ctx: RequestContext | None = None) -> AsyncIterator[ModelSlot]:
        """Admit one request to a model: refused at once when quarantined or its queue is full;
        loads the model if needed; it cannot be evicted while any request holds it."""
        refused = None
        if slot.crashes.quarantined:
            refused = quarantine_error(slot)
        elif len(slot.waiting) >= slot.max_queue:
            refused = Overloaded(f"model {slot.id} has {len(slot.waiting)} requests waiting (its limit); try again "
                                 f"later", retry_after=self._retry_after(slot))
        if refused is not None:
            slot.stats.record_error(refused.code)  # (refusals are what an operator most wants counted)
            raise refused
        slot.inflight += 1
        if ctx is not None:
            slot.waiting[ctx.number] = None
            ctx.position = lambda: slot.position(ctx.number) if ctx.number in slot.waiting else 0
        try:
            if not slot.loaded:
                async with slot.lock:
                    if not slot.loaded:
                        await self.loader.load(slot)
            yield slot
        finally:
            if ctx is not None:
                slot.waiting.pop(ctx.number, None)
            slot.inflight -= 1
            slot.last_used = time.monotonic()

    def started(self, slot: ModelSlot, ctxs: list[RequestContext]) -> Callable[[], None]:
        """on_start for a job: its requests stop counting as waiting."""
        def on_start() -> None:
            for ctx in ctxs:
                slot.waiting.pop(ctx.number, None)
        return on_start

    async def run(self, slot: ModelSlot, ctx: RequestContext | None, job: wp.Job, *, conversation: str | None = None,
                  on_text: Callable[[str], None] | None = None) -> Outcome:
        """Queue one request's job on the model and wait for it, mapping failures to wire errors."""
        work = slot.queue.submit(job, conversation=conversation, on_text=on_text,
                                 on_start=self.started(slot, [ctx] if ctx else []))

        def on_cancel(reason: str) -> None:
            if not slot.queue.withdraw(work, Withdrawn(reason)) and isinstance(job, wp.Generate) and work.worker:
                work.worker.cancel()  # running: stop at the next token

        unhook = ctx.on_cancel(on_cancel) if ctx is not None else (lambda: None)
        try:
            outcome = await slot.queue.result(work)
        except Withdrawn:
            raise cancelled_error(ctx) from None
        except (WorkerDied, WorkerFailed, ModelError) as exc:
            error = job_error(slot, exc)
            slot.stats.record_error(error.code)
            raise error from None
        finally:
            unhook()
        self.loader.measure(slot, max_age=1.0)  # inference grows a worker: keep the footprint true
        return outcome

    def _retry_after(self, slot: ModelSlot) -> float:
        per_job = (slot.stats.snapshot().inference_ms_p50 or 1000.0) / 1000
        return round(min(60.0, max(0.5, per_job * len(slot.waiting) / max(1, len(slot.workers) or 1))), 1)

    # -- explicit loads and unloads -----------------------------------------------------------------
    async def load(self, slot: ModelSlot) -> None:
        """An operator's load: also lifts a quarantine."""
        if slot.crashes.quarantined:
            log.info("model %s: quarantine lifted by an explicit load", slot.id)
            slot.crashes.lift()
            slot.state, slot.error = "unloaded", ""
        async with self.use(slot):
            pass

    async def unload(self, slot: ModelSlot, reason: str = "request") -> None:
        if slot.inflight:
            raise ModelBusy(f"model {slot.id} is serving {slot.inflight} request(s); try again when idle")
        async with slot.lock:
            if slot.loaded:
                await self.loader.unload(slot, "unloaded", reason)

    async def unload_idle(self) -> list[str]:
        done = []
        for slot in self.slots.values():
            ttl = self.config.manager.idle_ttl if slot.spec.ttl is None else slot.spec.ttl
            if slot.loaded and ttl > 0 and not slot.inflight and slot.idle_seconds() > ttl and not slot.lock.locked():
                await self.unload(slot, reason=f"idle for more than {ttl:g}s")
                done.append(slot.id)
        return done

    async def close(self) -> None:
        self.loader.closing = True
        await self.loader.settle()
        await asyncio.gather(*(self.loader.unload(s, "unloaded", "shutdown") for s in self.slots.values()
                               if s.workers))
