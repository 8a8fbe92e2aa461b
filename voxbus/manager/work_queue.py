"""One model's queue of jobs in front of its worker processes.

Jobs run in arrival order, one at a time per worker, on the worker that has been idle longest
(with one job each, a free worker is the least busy). A conversation sticks to the worker that
holds its KV state: its job waits for that worker while later jobs go to the others. The queue
lives in the manager, not in the workers, so a job whose caller went away is dropped before any
worker sees it, and nothing queued is lost with a crashed worker.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from dataclasses import dataclass, field
from typing import Callable

from voxbus.manager import worker_protocol as wp
from voxbus.manager.worker import ModelWorker

log = logging.getLogger(__name__)

AFFINITY_LIMIT = 4096  # conversations remembered per model (their worker), least recent dropped


@dataclass(eq=False)
class Work:
    job: wp.Job
    conversation: str | None
    on_text: Callable[[str], None] | None
    on_start: Callable[[], None] | None
    future: asyncio.Future
    arrived: float = field(default_factory=time.monotonic)
    started: float = 0.0
    worker: ModelWorker | None = None


@dataclass
class Outcome:
    result: wp.Result
    queue_ms: float
    worker: ModelWorker


class WorkQueue:
    def __init__(self, model_id: str) -> None:
        self.model_id = model_id
        self.waiting: list[Work] = []
        self.workers: list[ModelWorker] = []
        self.affinity: collections.OrderedDict[str, int] = collections.OrderedDict()
        self._idle_since: dict[int, float] = {}
        self._running: set[asyncio.Task] = set()

    # -- workers ------------------------------------------------------------------------------
    def set_workers(self, workers: list[ModelWorker]) -> None:
        self.workers = workers
        alive = {w.index for w in workers}
        for conv in [c for c, i in self.affinity.items() if i not in alive]:
            del self.affinity[conv]  # its KV state died with its worker: any worker may recompute it
        self.pump()

    def has_free_worker(self) -> bool:
        return any(w.free for w in self.workers)

    def busy_or_bound(self, index: int) -> int:
        """Jobs running on or waiting for this worker in particular."""
        running = sum(1 for w in self.workers if w.index == index and w.state in ("busy", "reserved"))
        return running + sum(1 for w in self.waiting if self._target(w) == index)

    # -- jobs ---------------------------------------------------------------------------------
    def submit(self, job: wp.Job, *, conversation: str | None = None, on_text=None, on_start=None) -> Work:
        work = Work(job, conversation, on_text, on_start, asyncio.get_running_loop().create_future())
        self.waiting.append(work)
        self.pump()
        return work

    async def result(self, work: Work) -> Outcome:
        try:
            return await asyncio.shield(work.future)
        except asyncio.CancelledError:  # the awaiting task itself was cancelled
            self.withdraw(work, asyncio.CancelledError())
            raise

    def withdraw(self, work: Work, exc: BaseException) -> bool:
        """Take a job back before it starts (its future gets `exc`); False once it runs or ran."""
        if work in self.waiting:
            self.waiting.remove(work)
            if not work.future.done():
                work.future.set_exception(exc)
                work.future.exception()
            return True
        return False

    def fail_waiting(self, exc: BaseException) -> None:
        for work in self.waiting:
            if not work.future.done():
                work.future.set_exception(exc)
        self.waiting.clear()

    def _target(self, work: Work) -> int | None:
        if work.conversation is None:
            return None
        return self.affinity.get(work.conversation)

    def pump(self) -> None:
        """Start every job that can start now, oldest first."""
        self.waiting = [w for w in self.waiting if not w.future.done()]
        free = sorted((w for w in self.workers if w.free), key=lambda w: self._idle_since.get(w.index, 0.0))
        for worker in free:
            for work in self.waiting:
                target = self._target(work)
                if target is None or target == worker.index:
                    self.waiting.remove(work)
                    self._start(work, worker)
                    break

    def _start(self, work: Work, worker: ModelWorker) -> None:
        work.started, work.worker = time.monotonic(), worker
        worker.state = "reserved"  # taken now, so the next pump passes it over
        if work.on_start is not None:
            work.on_start()
        task = asyncio.create_task(self._execute(work, worker))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _execute(self, work: Work, worker: ModelWorker) -> None:
        queue_ms = (work.started - work.arrived) * 1000
        try:
            result = await worker.run(work.job, work.on_text)
        except BaseException as exc:
            if not work.future.done():
                work.future.set_exception(exc)
                work.future.exception()  # retrieved: its caller may have gone
        else:
            if work.conversation is not None:
                self.affinity[work.conversation] = worker.index
                self.affinity.move_to_end(work.conversation)
                while len(self.affinity) > AFFINITY_LIMIT:
                    self.affinity.popitem(last=False)
            if not work.future.done():
                work.future.set_result(Outcome(result, queue_ms, worker))
        finally:
            self._idle_since[worker.index] = time.monotonic()
            self.pump()
