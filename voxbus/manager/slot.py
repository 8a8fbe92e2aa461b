"""One configured model: its state, its worker processes, its queue and its crash record.

The lock serialises load/unload of this model (concurrent first requests cause one load).
`inflight` counts requests holding the model (from before its load until their reply), so a
model that is loading or serving is never evicted; `waiting` holds those admitted and not yet
started, in arrival order: their number is what the queue limit bounds, and a request's index in
it is its place in the queue.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict

from voxbus.config.schema import ModelSpec
from voxbus.manager import worker_protocol as wp
from voxbus.manager.crashes import CrashHistory
from voxbus.manager.metrics import ModelStats
from voxbus.manager.work_queue import WorkQueue
from voxbus.manager.worker import ModelWorker
from voxbus.messages.model import WorkerInfo


class ModelSlot:
    def __init__(self, model_id: str, spec: ModelSpec, device: str, quantization: str | None, *,
                 max_queue: int, crashes: CrashHistory) -> None:
        self.id = model_id
        self.spec = spec
        self.device = device
        self.quantization = quantization
        self.max_queue = max_queue
        self.crashes = crashes
        self.state = "unloaded"
        self.error = ""
        self.lock = asyncio.Lock()
        self.inflight = 0
        self.waiting: OrderedDict[int, None] = OrderedDict()
        self.last_used = time.monotonic()
        self.ram = 0  # measured footprint of all instances (peak worker RSS, summed)
        self.vram = 0
        self.measured = 0.0  # when ram/vram were last read off the workers
        self.fingerprint = ""
        self.stats = ModelStats()
        self.queue = WorkQueue(model_id)
        self.info: wp.Loaded | None = None  # what the workers said when they loaded

    @property
    def instances(self) -> int:
        return self.spec.instances

    @property
    def workers(self) -> list[ModelWorker]:
        return self.queue.workers

    @property
    def loaded(self) -> bool:
        return self.state == "loaded" and any(w.alive for w in self.workers)

    def idle_seconds(self) -> float:
        return 0.0 if self.inflight else time.monotonic() - self.last_used

    def position(self, number: int) -> int | None:
        """Requests ahead of request `number` (None once it has started)."""
        for i, key in enumerate(self.waiting):
            if key == number:
                return i
        return None

    def worker_infos(self) -> list[WorkerInfo]:
        now = time.monotonic()
        out = []
        for w in self.workers:
            state = {"reserved": "busy"}.get(w.state, w.state)
            if state not in ("starting", "idle", "busy", "stopping"):
                continue
            out.append(WorkerInfo(index=w.index, pid=w.pid, state=state, rss_bytes=w.sample_rss(), vram_bytes=w.vram,
                                  queue=self.queue.busy_or_bound(w.index), jobs=w.jobs,
                                  crashes=self.crashes.count(now, w.index)))
        return out
