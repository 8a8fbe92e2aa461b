"""Cross-session batching of transcribe requests for one speech-to-text model.

Concurrent utterances (from any session) that decode alike are run as one batch on the model's
worker thread: the encoder and decoder then do one pass for all of them, which on a CPU is far
cheaper than one pass each (docs/BENCHMARKS.md). Policy, Triton-style with an early start: a
batch starts when `max_batch` requests are queued, when the oldest has waited `max_wait_ms` for
company, or when no request has arrived for `quiet_ms` (the burst is over: a lone utterance from
a live session must not sit out the whole window). One batch runs at a time, and requests
arriving meanwhile form the next one, so under load batches fill up by themselves.

Each waiting request holds the model through ModelPool.use(), so a model with requests in its
batcher counts as busy and is never evicted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from voxbus.config.schema import BatchingConfig
from voxbus.manager.backends.base import BackendError, TranscribeResult
from voxbus.manager.slot import ModelSlot

log = logging.getLogger(__name__)


@dataclass
class BatchOutcome:
    result: TranscribeResult
    queue_ms: float  # from submit until the batch started on the worker
    infer_ms: float  # the whole batch's inference time
    batch_size: int


@dataclass
class _Pending:
    audio: np.ndarray
    language: str | None
    options: dict[str, Any]
    key: tuple  # requests batch together only when they decode alike
    future: asyncio.Future
    arrived: float = field(default_factory=time.monotonic)


class TranscribeBatcher:
    def __init__(self, slot: ModelSlot, config: BatchingConfig) -> None:
        self.slot = slot
        self.config = config
        self._queue: list[_Pending] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._last_arrival = 0.0

    def accepts(self, audio: np.ndarray) -> bool:
        """Whether this utterance can go through a batch (else: the one-by-one path)."""
        backend = self.slot.backend
        limit = getattr(backend, "batch_max_seconds", 0.0)
        if not self.config.enabled or not hasattr(backend, "transcribe_batch") or not limit:
            return False
        return len(audio) <= limit * backend.sample_rate

    async def submit(self, audio: np.ndarray, language: str | None, options: dict[str, Any]) -> BatchOutcome:
        # Validate here, not in the batch: one request's bad audio must fail only that request.
        if audio.ndim != 1 or not len(audio) or not np.isfinite(audio).all():
            raise BackendError("audio must be a non-empty, finite mono signal")
        opts = {**options, "pad_seconds": self.config.pad_seconds}
        key = (language, tuple(sorted(options.items())))
        pending = _Pending(audio, language, opts, key, asyncio.get_running_loop().create_future())
        self._queue.append(pending)
        self._last_arrival = pending.arrived
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name=f"batcher-{self.slot.id}")
        return await pending.future

    def _next(self) -> tuple[list[_Pending], float]:
        """(the batch to run now, 0) or ([], seconds the oldest may still wait for company)."""
        self._queue = [p for p in self._queue if not p.future.done()]  # callers that gave up
        if not self._queue:
            return [], 0.0
        first = self._queue[0]
        alike = [p for p in self._queue if p.key == first.key][:self.config.max_batch]
        now = time.monotonic()
        left = min(self.config.max_wait_ms / 1000 - (now - first.arrived),
                   self.config.quiet_ms / 1000 - (now - self._last_arrival))
        if len(alike) < self.config.max_batch and left > 0:
            return [], left
        taken = {id(p) for p in alike}
        self._queue = [p for p in self._queue if id(p) not in taken]
        return alike, 0.0

    async def _drain(self) -> None:
        """Run batches until the queue is empty; submit() starts it when none is running."""
        try:
            while self._queue:
                batch, left = self._next()
                if batch:
                    await self._run(batch)
                elif left > 0:
                    self._wake.clear()
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), left)
        except Exception as exc:  # a bug here must not leave callers waiting forever
            log.exception("transcribe batcher for %s failed", self.slot.id)
            for p in self._queue:
                if not p.future.done():
                    p.future.set_exception(exc)
            self._queue.clear()

    async def _run(self, batch: list[_Pending]) -> None:
        first = batch[0]
        submitted = time.monotonic()
        try:
            results, queue_ms, infer_ms = await self.slot.timed(
                self.slot.backend.transcribe_batch, [p.audio for p in batch], first.language, first.options)
        except Exception as exc:
            if len(batch) == 1:
                if not first.future.done():
                    first.future.set_exception(exc)
                return
            # Something in the batch broke it: run each alone so only the culprit fails.
            log.warning("batch of %d on %s failed (%s); running its requests one by one", len(batch), self.slot.id, exc)
            for p in batch:
                await self._run([p])
            return
        for p, result in zip(batch, results):
            if not p.future.done():
                waited = (submitted - p.arrived) * 1000 + queue_ms
                p.future.set_result(BatchOutcome(result, waited, infer_ms, len(batch)))
