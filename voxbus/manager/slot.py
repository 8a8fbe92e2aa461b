"""One configured model: its state, its backend, its lock and its worker thread.

The lock serialises load/unload of this model (concurrent first requests cause one load). The
worker is a single thread, so a backend object (a llama.cpp context is not thread-safe) is only
ever used by one thread, and blocking inference never runs on the event loop.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, TypeVar

from voxbus.config.schema import ModelSpec
from voxbus.manager.backends.base import Backend
from voxbus.manager.metrics import ModelStats

T = TypeVar("T")


class ModelSlot:
    def __init__(self, model_id: str, spec: ModelSpec, device: str, quantization: str | None) -> None:
        self.id = model_id
        self.spec = spec
        self.device = device
        self.quantization = quantization
        self.state = "unloaded"
        self.backend: Backend | None = None
        self.lock = asyncio.Lock()
        self.executor: ThreadPoolExecutor | None = None
        self.inflight = 0  # requests holding or waiting for this model: never evicted while > 0
        self.last_used = time.monotonic()
        self.ram = 0
        self.vram = 0
        self.fingerprint = ""
        self.stats = ModelStats()
        self.error = ""

    @property
    def loaded(self) -> bool:
        return self.state == "loaded" and self.backend is not None

    def idle_seconds(self) -> float:
        return 0.0 if self.inflight else time.monotonic() - self.last_used

    def start_worker(self) -> None:
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"model-{self.id}")

    def stop_worker(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)
        self.executor = None

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run fn(*args) in this model's worker thread."""
        if self.executor is None:
            raise RuntimeError(f"model {self.id} has no worker")
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def timed(self, fn: Callable[..., T], *args: Any) -> tuple[T, float, float]:
        """(result, queue_ms, inference_ms): queue time is spent waiting for the worker."""
        submitted = time.perf_counter()
        started: list[float] = []

        def job() -> T:
            started.append(time.perf_counter())
            return fn(*args)

        result = await self.call(job)
        end = time.perf_counter()
        begin = started[0] if started else submitted
        return result, (begin - submitted) * 1000, (end - begin) * 1000
