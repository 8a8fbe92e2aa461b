"""Cross-session batching of transcribe requests for one speech-to-text model.

Concurrent utterances (from any session) that decode alike are run as one batch on one of the
model's workers: the encoder and decoder then do one pass for all of them, which on a CPU is far
cheaper than one pass each (docs/BENCHMARKS.md). Policy, Triton-style with an early start: a
batch starts when `max_batch` requests are queued, when the oldest has waited `max_wait_ms` for
company, or when no request has arrived for `quiet_ms` (the burst is over: a lone utterance from
a live session must not sit out the whole window). As many batches run at once as the model has
workers; requests arriving meanwhile form the next one, so under load batches fill up by
themselves. A request whose caller goes away before its batch forms is dropped from it.
Interim requests (partials) wait behind every final: a batch of finals always forms first, so a
partial never delays a final by more than a batch already running.

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
from voxbus.errors import InvalidAudio, ModelError
from voxbus.manager import worker_protocol as wp
from voxbus.manager.pool import cancelled_error, job_error
from voxbus.manager.worker import WorkerFailed

log = logging.getLogger(__name__)


@dataclass
class BatchOutcome:
    result: wp.Transcript
    queue_ms: float  # from submit until the batch started on a worker
    infer_ms: float  # the whole batch's inference time
    batch_size: int


@dataclass
class _Pending:
    audio: np.ndarray
    language: str | None
    options: dict[str, Any]
    key: tuple  # requests batch together only when they decode alike
    future: asyncio.Future
    ctx: Any = None  # its RequestContext (leaves the model's waiting list when the batch starts)
    interim: bool = False  # a partial: batched after every final
    arrived: float = field(default_factory=time.monotonic)


class TranscribeBatcher:
    def __init__(self, slot, pool, config: BatchingConfig) -> None:
        self.slot = slot
        self.pool = pool  # ModelPool: how a batch's job is queued and its failures are worded
        self.config = config
        self._queue: list[_Pending] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._running: set[asyncio.Task] = set()
        self._last_arrival = 0.0

    def accepts(self, audio: np.ndarray) -> bool:
        """Whether this utterance can go through a batch (else: the one-by-one path)."""
        info = self.slot.info
        if not self.config.enabled or info is None or not info.batch_max_seconds:
            return False
        return len(audio) <= info.batch_max_seconds * info.sample_rate

    async def submit(self, audio: np.ndarray, language: str | None, options: dict[str, Any], ctx=None, *,
                     interim: bool = False) -> BatchOutcome:
        # Checked here, not in the batch: one request's bad audio must fail only that request.
        if audio.ndim != 1 or not len(audio) or not np.isfinite(audio).all():
            raise InvalidAudio("audio must be a non-empty, finite mono signal")
        opts = {**options, "pad_seconds": self.config.pad_seconds}
        key = (language, tuple(sorted(options.items())))
        pending = _Pending(audio, language, opts, key, asyncio.get_running_loop().create_future(), ctx, interim=interim)
        unhook = ctx.on_cancel(lambda reason: self._drop(pending, reason)) if ctx is not None else (lambda: None)
        self._queue.append(pending)
        self._last_arrival = pending.arrived
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name=f"batcher-{self.slot.id}")
        try:
            return await pending.future
        finally:
            unhook()

    def _drop(self, pending: _Pending, reason: str) -> None:
        if pending in self._queue and not pending.future.done():
            pending.future.set_exception(cancelled_error(pending.ctx))

    def _next(self) -> tuple[list[_Pending], float]:
        """(the batch to run now, 0) or ([], seconds the oldest may still wait for company)."""
        self._queue = [p for p in self._queue if not p.future.done()]  # callers that gave up
        if not self._queue:
            return [], 0.0
        first = next((p for p in self._queue if not p.interim), self._queue[0])  # finals first
        alike = [p for p in self._queue if p.key == first.key and p.interim == first.interim][:self.config.max_batch]
        now = time.monotonic()
        left = min(self.config.max_wait_ms / 1000 - (now - first.arrived),
                   self.config.quiet_ms / 1000 - (now - self._last_arrival))
        if len(alike) < self.config.max_batch and left > 0:
            return [], left
        taken = {id(p) for p in alike}
        self._queue = [p for p in self._queue if id(p) not in taken]
        return alike, 0.0

    async def _drain(self) -> None:
        """Form and start batches until the queue is empty; submit() starts it when none runs."""
        try:
            while self._queue:
                if len(self._running) >= max(1, len(self.slot.workers)):
                    # Every worker has a batch: let requests gather into the next one meanwhile.
                    await asyncio.wait(set(self._running), return_when=asyncio.FIRST_COMPLETED)
                    continue
                batch, left = self._next()
                if batch:
                    task = asyncio.create_task(self._run(batch))
                    self._running.add(task)
                    task.add_done_callback(self._running.discard)
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
        job = wp.Transcribe(job=0, audios=[p.audio.tobytes() for p in batch], language=first.language,
                            options=first.options, batch=True)
        work = self.slot.queue.submit(job, on_start=self.pool.started(self.slot, [p.ctx for p in batch if p.ctx]))
        try:
            outcome = await self.slot.queue.result(work)
        except WorkerFailed as exc:
            if len(batch) > 1:
                # Something in the batch broke it: run each alone so only the culprit fails.
                log.warning("batch of %d on %s failed (%s); running its requests one by one", len(batch),
                            self.slot.id, exc)
                await asyncio.gather(*(self._run([p]) for p in batch))
                return
            self._fail(batch, exc)
            return
        except BaseException as exc:  # the worker died: every request of the batch gets the crash
            self._fail(batch, exc)
            return
        for p, result in zip(batch, outcome.result.transcripts or []):
            if not p.future.done():
                waited = (work.started - p.arrived) * 1000
                p.future.set_result(BatchOutcome(result, waited, outcome.result.infer_ms, len(batch)))

    def _fail(self, batch: list[_Pending], exc: BaseException) -> None:
        error = exc if isinstance(exc, ModelError) else job_error(self.slot, exc)
        for p in batch:
            if not p.future.done():
                self.slot.stats.record_error(error.code)
                p.future.set_exception(error)
