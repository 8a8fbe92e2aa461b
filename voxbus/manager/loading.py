"""Starting and ending a model's worker processes: admission against the budgets, the load, the
footprint measurement, unloads and evictions, and what happens when a worker dies.

A model's footprint is what its own workers hold: each worker's peak RSS (and, on a GPU, its
NVML per-process memory), measured, never a before/after delta of the manager's process. Ending
the workers gives that memory back to the operating system, so the manager's own memory stays
flat however often models come and go. Loads of different models run in parallel: each is
admitted under one lock against what is loaded *and* what is being loaded (its reservation).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from pathlib import Path

from voxbus.config.schema import Config
from voxbus.errors import ModelError, ModelFailed, ModelRefused
from voxbus.manager import sources
from voxbus.manager import worker_protocol as wp
from voxbus.manager.admission import Resident, plan_load
from voxbus.manager.crashes import Crash
from voxbus.manager.events import AdminPublisher
from voxbus.manager.footprints import Footprints
from voxbus.manager.quantization import resolve_quantization
from voxbus.manager.resources import Resources
from voxbus.manager.slot import ModelSlot
from voxbus.manager.worker import ModelWorker, WorkerDied, WorkerExit, WorkerFailed
from voxbus.messages.admin import CacheEvent

log = logging.getLogger(__name__)


def quarantine_error(slot: ModelSlot) -> ModelFailed:
    return ModelFailed(f"model {slot.id} is quarantined after {slot.crashes.summary(time.monotonic())}; "
                       f"see its `crashed` events (voxbus models, the ADMIN stream), fix the cause, then run "
                       f"`voxbus models load {slot.id}` to serve it again")


class ModelLoader:
    def __init__(self, config: Config, resources: Resources, events: AdminPublisher, cache_dir: Path,
                 slots: dict[str, ModelSlot]) -> None:
        self.config = config
        self.resources = resources
        self.events = events
        self.cache_dir = cache_dir
        self.slots = slots
        self.footprints = Footprints(cache_dir / "footprints.json")
        self._admit = asyncio.Lock()
        self._loads: dict[str, wp.Load] = {}  # per model: what its workers were started with
        self._background: set[asyncio.Task] = set()
        self._cuda: dict[str, bool] = {}
        self.closing = False
        self.crash_log: list[tuple[str, WorkerExit]] = []  # every unexpected worker death, in order

    def budgets(self) -> tuple[int, int]:
        b = self.config.manager.budgets
        return b.ram.resolve(self.resources.ram_total()), b.vram.resolve(self.resources.vram_total())

    # -- loading -------------------------------------------------------------------------------
    async def load(self, slot: ModelSlot) -> None:
        """Start the model's workers (call with slot.lock held)."""
        if slot.crashes.quarantined:
            raise quarantine_error(slot)
        spec = slot.spec
        async with self._admit:
            try:
                src = await asyncio.to_thread(sources.resolve, spec.source, self.cache_dir)
                slot.fingerprint = await asyncio.to_thread(sources.fingerprint, src, self.cache_dir)
                await self._settle_device(slot)
            except ModelError as exc:
                slot.state, slot.error = "failed", exc.message
                await self.events.model("failed", slot.id, spec.kind, reason="source", detail=exc.message)
                raise
            size = sum(f.stat().st_size for f in sources.files_of(src.path))
            need_ram, need_vram = self.expected(slot, size)
            ram_budget, vram_budget = self.budgets()
            residents = [self._resident(s) for s in self.slots.values()
                         if s is not slot and (s.loaded or s.state == "loading")]
            plan = plan_load(need_ram, need_vram, residents, ram_budget, vram_budget)
            if not plan.admit:
                await self.events.model("refused", slot.id, spec.kind, reason="budget", ram=need_ram, vram=need_vram,
                                        detail=plan.reason)
                raise ModelRefused(f"model {slot.id} does not fit: {plan.reason}")
            for victim_id in plan.evict:
                await self.unload(self.slots[victim_id], "evicted", f"make room for {slot.id}")
            slot.state, slot.ram, slot.vram = "loading", need_ram, need_vram  # reserved until measured
        await self.events.model("loading", slot.id, spec.kind, reason="request", ram=need_ram, vram=need_vram)
        load = self._load_message(slot, src)
        started = time.perf_counter()
        results = await asyncio.gather(*(self._start_worker(slot, i, load) for i in range(slot.instances)),
                                       return_exceptions=True)
        workers = [r for r in results if isinstance(r, ModelWorker)]
        failure = next((r for r in results if isinstance(r, BaseException)), None)
        if failure is not None:
            await asyncio.gather(*(w.stop(self.config.manager.stop_timeout) for w in workers))
            slot.state, slot.ram, slot.vram = "failed", 0, 0
            raise await self._load_failed(slot, failure)
        load_ms = (time.perf_counter() - started) * 1000
        self._loads[slot.id] = load
        slot.info = workers[0].loaded
        slot.queue.set_workers(workers)
        slot.state, slot.error = "loaded", ""
        slot.stats.load_ms = load_ms
        slot.last_used = time.monotonic()
        self.measure(slot)
        pids = ", ".join(str(w.pid) for w in workers)
        await self.events.model("loaded", slot.id, spec.kind, reason="request", ram=slot.ram, vram=slot.vram,
                                load_ms=load_ms, pid=workers[0].pid,
                                detail=f"device={slot.device} quantization={slot.quantization or 'as shipped'} "
                                       f"workers={pids}")

    async def _start_worker(self, slot: ModelSlot, index: int, load: wp.Load) -> ModelWorker:
        worker = ModelWorker(slot.id, index, watchdog=float(self.config.manager.watchdog),
                             on_exit=lambda w, e: self._on_exit(slot, w, e),
                             on_cache=lambda ev: self._spawn(self._cache_event(slot, ev)))
        await worker.start(load, float(self.config.manager.load_timeout))
        return worker

    async def _load_failed(self, slot: ModelSlot, exc: BaseException) -> ModelError:
        if isinstance(exc, WorkerFailed):
            kind = "bad model or option" if exc.failed.kind == "bad_input" else "load error"
            error = ModelFailed(f"loading {slot.id} failed ({kind}): {exc.failed.message}")
        elif isinstance(exc, WorkerDied):
            tail = " | ".join(exc.exit.stderr[-3:])
            error = ModelFailed(f"loading {slot.id} failed: its worker was {exc.exit.reason}" + (f": {tail}" if tail else ""))
        elif isinstance(exc, ModelError):
            error = exc
        else:
            error = ModelFailed(f"loading {slot.id} failed: {type(exc).__name__}: {exc}")
        slot.error = error.message
        await self.events.model("failed", slot.id, slot.spec.kind, reason="load", detail=error.message)
        return error

    def _load_message(self, slot: ModelSlot, src: sources.ResolvedSource) -> wp.Load:
        spec, cc = slot.spec, self.config.cache
        conversations = None
        if spec.kind == "llm" and cc.max_conversations > 0:
            conversations = {"max_conversations": cc.max_conversations, "max_bytes": int(cc.max_bytes),
                             "idle_timeout": float(cc.idle_timeout), "spill_dir": cc.spill_dir,
                             "model_key": f"{slot.id}-{slot.fingerprint[:16]}-{slot.quantization or 'native'}-{slot.device}"}
        return wp.Load(
            backend=spec.backend, model_id=slot.id, path=str(src.path),
            config_path=str(src.config_path) if src.config_path else None, quantization=slot.quantization,
            device=slot.device, n_gpu_layers=spec.n_gpu_layers, threads=self.config.manager.threads,
            options=dict(spec.options), fingerprint=slot.fingerprint, cache_dir=str(self.cache_dir),
            conversations=conversations)

    async def _settle_device(self, slot: ModelSlot) -> None:
        """`device: auto` on a GPU machine: ask the backend's library (in a throwaway process, so
        the manager never imports it) whether it can use CUDA."""
        if slot.spec.device != "auto" or not self.resources.has_gpu:
            return
        backend = slot.spec.backend
        if backend not in self._cuda:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "voxbus.manager.worker_main", "--probe-cuda", backend,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
            out, _ = await proc.communicate()
            self._cuda[backend] = out.strip() == b"1"
        device = "cuda" if self._cuda[backend] else "cpu"
        if device != slot.device:
            slot.device = device
            slot.quantization = resolve_quantization(backend, slot.spec.quantization, device)

    # -- measuring -------------------------------------------------------------------------------
    def measure(self, slot: ModelSlot, max_age: float = 0.0) -> None:
        """Read the workers' memory; the largest per-instance reading is kept for admission. RSS
        is read every time (microseconds); NVML's process list only if older than max_age."""
        workers = [w for w in slot.workers if w.alive]
        if not workers:
            return
        now = time.monotonic()
        gpu = now - slot.measured >= max_age
        for w in workers:
            w.sample_rss()
            if gpu:
                w.vram = self.resources.gpu_process_bytes(w.pid)
        if gpu:
            slot.measured = now
        slot.ram = sum(w.peak_rss for w in workers)
        slot.vram = sum(w.vram for w in workers)
        self.footprints.record(self._fp_key(slot), max(w.peak_rss for w in workers), max(w.vram for w in workers))

    def expected(self, slot: ModelSlot, file_bytes: int = 0) -> tuple[int, int]:
        """(RAM, VRAM) the model is admitted with: every instance's recorded (or estimated) footprint."""
        one_ram, one_vram = self.footprints.estimate(self._fp_key(slot), file_bytes, slot.device)
        return one_ram * slot.instances, one_vram * slot.instances

    def _fp_key(self, slot: ModelSlot) -> str:
        return f"{slot.id}|{slot.fingerprint}|{slot.quantization}|{slot.device}"

    def _resident(self, slot: ModelSlot) -> Resident:
        return Resident(slot.id, slot.ram, slot.vram, slot.spec.priority, slot.last_used,
                        pinned=slot.spec.pinned, busy=slot.inflight > 0 or slot.state == "loading")

    # -- unloading -------------------------------------------------------------------------------
    async def unload(self, slot: ModelSlot, event: str, reason: str) -> None:
        workers = list(slot.workers)
        slot.queue.set_workers([])
        await asyncio.gather(*(w.stop(float(self.config.manager.stop_timeout)) for w in workers))
        ram, vram = slot.ram, slot.vram  # kept: the last measurement stays on record
        slot.state, slot.info = "unloaded", None
        await self.events.model(event, slot.id, slot.spec.kind, reason=reason, ram=ram, vram=vram)

    # -- crashes ---------------------------------------------------------------------------------
    def _on_exit(self, slot: ModelSlot, worker: ModelWorker, exit: WorkerExit) -> None:
        if not exit.expected and worker.loaded is not None:  # a death during its load fails the load
            self._spawn(self._crashed(slot, worker, exit))

    async def _crashed(self, slot: ModelSlot, worker: ModelWorker, exit: WorkerExit) -> None:
        if worker not in slot.workers:
            return
        slot.queue.set_workers([w for w in slot.workers if w is not worker])
        self.crash_log.append((slot.id, exit))
        quarantine = slot.crashes.record(Crash(time.monotonic(), worker.index, exit.reason))
        log.error("model %s: worker %d (pid %d) %s; last stderr: %s", slot.id, worker.index, exit.pid, exit.reason,
                  " | ".join(exit.stderr[-5:]) or "(none)")
        others: list[ModelWorker] = []
        if quarantine:
            error = quarantine_error(slot)
            slot.state, slot.error = "quarantined", error.message
            others = list(slot.workers)
            slot.queue.set_workers([])
            slot.queue.fail_waiting(error)
        elif not slot.workers:
            slot.state, slot.error = "crashed", exit.reason
        await self.events.model("crashed", slot.id, slot.spec.kind, reason=exit.reason, pid=exit.pid,
                                exit_code=exit.exit_code, signal=exit.signal, stderr=exit.stderr,
                                detail=slot.crashes.summary(time.monotonic()))
        if quarantine:
            await asyncio.gather(*(w.stop(float(self.config.manager.stop_timeout)) for w in others))
            await self.events.model("quarantined", slot.id, slot.spec.kind, reason="crash loop", detail=slot.error)
        elif slot.workers:  # other instances serve on; bring this one back (its memory is still counted)
            self._spawn(self._respawn(slot, worker.index))
        elif slot.queue.waiting and not self.closing:  # queued requests need it back now
            self._spawn(self._reload(slot))

    async def _respawn(self, slot: ModelSlot, index: int) -> None:
        load = self._loads.get(slot.id)
        if load is None or self.closing or slot.state != "loaded":
            return
        try:
            worker = await self._start_worker(slot, index, load)
        except Exception as exc:
            log.error("model %s: restarting instance %d failed: %s", slot.id, index, exc)
            return
        if slot.state != "loaded":
            await worker.stop(float(self.config.manager.stop_timeout))
            return
        slot.queue.set_workers(slot.workers + [worker])

    async def _reload(self, slot: ModelSlot) -> None:
        async with slot.lock:
            if slot.loaded or slot.crashes.quarantined:
                return
            try:
                await self.load(slot)
            except ModelError as exc:
                slot.queue.fail_waiting(exc)

    async def _cache_event(self, slot: ModelSlot, ev: wp.Cache) -> None:
        await self.events.cache(CacheEvent(event=ev.event, model=slot.id, conversation=ev.conversation,
                                           bytes=ev.bytes, reason=ev.reason))

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def settle(self) -> None:
        """Wait for background work (crash handling, events) to finish: for shutdown and tests."""
        while self._background:
            await asyncio.gather(*set(self._background), return_exceptions=True)
