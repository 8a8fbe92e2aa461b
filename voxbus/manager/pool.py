"""The set of configured models and their memory: load on demand, admit against budgets using
each model's measured footprint, evict by priority then LRU, unload idle models.

Loads are serialised across models (one admission lock) so every footprint measurement is a
clean before/after delta and two loads never both count on the same free memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import time
from pathlib import Path
from typing import AsyncIterator

from voxbus.config.schema import Config
from voxbus.errors import (
    ModelError, ModelFailed, ModelRefused, Unavailable, UnknownModel, VersionMismatch, WrongKind,
)
from voxbus.manager import sources
from voxbus.manager.admission import Resident, plan_load
from voxbus.manager.backends import backend_class
from voxbus.manager.backends.base import BackendError, LlmBackend, LoadSpec
from voxbus.manager.conversations import ConversationStore
from voxbus.manager.events import AdminPublisher
from voxbus.manager.quantization import resolve_quantization
from voxbus.manager.resources import Resources
from voxbus.manager.slot import ModelSlot
from voxbus.messages.admin import CacheEvent

log = logging.getLogger(__name__)


class ModelPool:
    def __init__(self, config: Config, resources: Resources, events: AdminPublisher, cache_dir: Path) -> None:
        self.config = config
        self.resources = resources
        self.events = events
        self.cache_dir = cache_dir
        self._admit = asyncio.Lock()
        self._background: set[asyncio.Future] = set()
        self._footprints_file = cache_dir / "footprints.json"
        self.footprints: dict[str, list[int]] = self._read_footprints()
        self.slots: dict[str, ModelSlot] = {}
        for model_id, spec in config.models.items():
            device = self._device(spec.backend, spec.device)
            try:
                quant = resolve_quantization(spec.backend, spec.quantization, device)
            except ModelError as exc:
                raise ModelError(f"model {model_id}: {exc.message}") from None
            self.slots[model_id] = ModelSlot(model_id, spec, device, quant)

    # -- budgets and routing -------------------------------------------------------------------
    def _device(self, backend: str, wanted: str) -> str:
        if wanted == "cpu" or not self.resources.has_gpu:
            return "cpu"
        if wanted == "cuda":
            return "cuda"
        return "cuda" if backend_class(backend).supports_cuda() else "cpu"

    def budgets(self) -> tuple[int, int]:
        b = self.config.manager.budgets
        return b.ram.resolve(self.resources.ram_total()), b.vram.resolve(self.resources.vram_total())

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

    # -- use ----------------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def use(self, slot: ModelSlot) -> AsyncIterator[ModelSlot]:
        """Hold a model for one request: loads it if needed; it cannot be evicted meanwhile."""
        if slot.inflight >= self.config.manager.max_queue:
            raise Unavailable(f"model {slot.id} has {slot.inflight} requests queued; try again later")
        slot.inflight += 1
        try:
            if not slot.loaded:
                async with slot.lock:
                    if not slot.loaded:
                        await self._load(slot)
            yield slot
        finally:
            slot.inflight -= 1
            slot.last_used = time.monotonic()

    async def load(self, slot: ModelSlot) -> None:
        async with self.use(slot):
            pass

    # -- loading ------------------------------------------------------------------------------
    def _estimate(self, slot: ModelSlot, size: int) -> tuple[int, int]:
        measured = self.footprints.get(self._fp_key(slot))
        if measured:
            return measured[0], measured[1]
        # Never loaded here: guess from file size (weights are mapped/copied once, plus buffers).
        return (int(size * 1.25), 0) if slot.device == "cpu" else (int(size * 0.25), int(size * 1.2))

    def _fp_key(self, slot: ModelSlot) -> str:
        return f"{slot.id}|{slot.fingerprint}|{slot.quantization}|{slot.device}"

    async def _load(self, slot: ModelSlot) -> None:
        async with self._admit:
            spec = slot.spec
            try:
                src = await asyncio.to_thread(sources.resolve, spec.source, self.cache_dir)
                slot.fingerprint = await asyncio.to_thread(sources.fingerprint, src, self.cache_dir)
            except ModelError as exc:
                slot.state, slot.error = "failed", exc.message
                await self.events.model("failed", slot.id, spec.kind, reason="source", detail=exc.message)
                raise
            size = sum(f.stat().st_size for f in sources.files_of(src.path))
            need_ram, need_vram = self._estimate(slot, size)
            ram_budget, vram_budget = self.budgets()
            residents = [self._resident(s) for s in self.slots.values() if s.loaded and s is not slot]
            plan = plan_load(need_ram, need_vram, residents, ram_budget, vram_budget)
            if not plan.admit:
                await self.events.model("refused", slot.id, spec.kind, reason="budget", ram=need_ram, vram=need_vram,
                                        detail=plan.reason)
                raise ModelRefused(f"model {slot.id} does not fit: {plan.reason}")
            for victim_id in plan.evict:
                await self._unload(self.slots[victim_id], "evicted", f"make room for {slot.id}")
            await self._load_now(slot, src, need_ram, need_vram)

    async def _load_now(self, slot: ModelSlot, src: sources.ResolvedSource, need_ram: int, need_vram: int) -> None:
        spec = slot.spec
        slot.state = "loading"
        await self.events.model("loading", slot.id, spec.kind, reason="request", ram=need_ram, vram=need_vram)
        load_spec = LoadSpec(
            model_id=slot.id, path=src.path, config_path=src.config_path, quantization=slot.quantization,
            device=slot.device, n_gpu_layers=spec.n_gpu_layers, threads=self.config.manager.threads,
            options=dict(spec.options), fingerprint=slot.fingerprint, cache_dir=self.cache_dir,
        )
        backend = backend_class(spec.backend)()
        slot.start_worker()
        started = time.perf_counter()
        try:
            before = await slot.call(self.resources.reading)
            await slot.call(backend.load, load_spec)
            after = await slot.call(self.resources.reading)
        except Exception as exc:
            slot.stop_worker()
            slot.state, slot.error = "failed", str(exc)
            await self.events.model("failed", slot.id, spec.kind, reason="load", detail=str(exc))
            if isinstance(exc, ModelError):
                raise
            kind = "bad model or option" if isinstance(exc, BackendError) else type(exc).__name__
            raise ModelFailed(f"loading {slot.id} failed ({kind}): {exc}") from exc
        load_ms = (time.perf_counter() - started) * 1000
        # RSS may not shrink after an unload (the allocator keeps pages), so a reload can measure
        # less than the truth: keep the largest footprint ever measured for this exact model.
        ram = max(after.rss_bytes - before.rss_bytes, backend.footprint_hint() if slot.device == "cpu" else 0)
        vram = max(after.gpu_process_bytes - before.gpu_process_bytes, 0)
        old = self.footprints.get(self._fp_key(slot), [0, 0])
        slot.ram, slot.vram = max(ram, old[0]), max(vram, old[1])
        self._write_footprint(slot)
        if (isinstance(backend, LlmBackend) and self.config.cache.max_conversations > 0
                and (loader := backend.snapshot_loader()) is not None):
            backend.conversations = self._conversation_store(slot, loader)
        slot.backend, slot.state, slot.error = backend, "loaded", ""
        slot.stats.load_ms = load_ms
        slot.last_used = time.monotonic()
        await self.events.model("loaded", slot.id, spec.kind, reason="request", ram=slot.ram, vram=slot.vram,
                                load_ms=load_ms, detail=f"device={slot.device} quantization={slot.quantization or 'as shipped'}")

    def _conversation_store(self, slot: ModelSlot, loader) -> ConversationStore:
        """Per-conversation KV states of this LLM; events cross from its worker thread to the loop."""
        cc = self.config.cache
        loop = asyncio.get_running_loop()

        def on_event(event: str, conversation: str, nbytes: int, reason: str) -> None:
            ev = CacheEvent(event=event, model=slot.id, conversation=conversation, bytes=nbytes, reason=reason)
            loop.call_soon_threadsafe(lambda: self._spawn(self.events.cache(ev)))

        return ConversationStore(
            cc, model_key=f"{slot.id}-{slot.fingerprint[:16]}-{slot.quantization or 'native'}-{slot.device}",
            load=loader, spill_dir=Path(cc.spill_dir).expanduser() if cc.spill_dir else None, on_event=on_event)

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- unloading ----------------------------------------------------------------------------
    async def _unload(self, slot: ModelSlot, event: str, reason: str) -> None:
        backend, slot.backend = slot.backend, None
        if backend is not None and slot.executor is not None:
            try:
                await slot.call(backend.unload)
            except Exception as exc:
                log.warning("unloading %s raised %s", slot.id, exc)
        slot.stop_worker()
        del backend
        gc.collect()
        ram, vram = slot.ram, slot.vram
        slot.state = "unloaded"
        await self.events.model(event, slot.id, slot.spec.kind, reason=reason, ram=ram, vram=vram)

    async def unload(self, slot: ModelSlot, reason: str = "request") -> None:
        if slot.inflight:
            raise Unavailable(f"model {slot.id} is serving {slot.inflight} request(s); try again when idle")
        async with slot.lock:
            if slot.loaded:
                async with self._admit:
                    await self._unload(slot, "unloaded", reason)

    async def unload_idle(self) -> list[str]:
        done = []
        for slot in self.slots.values():
            ttl = self.config.manager.idle_ttl if slot.spec.ttl is None else slot.spec.ttl
            if slot.loaded and ttl > 0 and not slot.inflight and slot.idle_seconds() > ttl and not slot.lock.locked():
                await self.unload(slot, reason=f"idle for more than {ttl:g}s")
                done.append(slot.id)
        return done

    async def close(self) -> None:
        for slot in self.slots.values():
            if slot.loaded:
                await self._unload(slot, "unloaded", "shutdown")

    # -- records ------------------------------------------------------------------------------
    def _resident(self, slot: ModelSlot) -> Resident:
        return Resident(slot.id, slot.ram, slot.vram, slot.spec.priority, slot.last_used,
                        pinned=slot.spec.pinned, busy=slot.inflight > 0)

    def _read_footprints(self) -> dict[str, list[int]]:
        try:
            return json.loads(self._footprints_file.read_text())
        except (OSError, ValueError):
            return {}

    def _write_footprint(self, slot: ModelSlot) -> None:
        self.footprints[self._fp_key(slot)] = [slot.ram, slot.vram]
        try:
            self._footprints_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self._footprints_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.footprints, indent=1))
            tmp.replace(self._footprints_file)
        except OSError as exc:
            log.warning("cannot save footprint records: %s", exc)
