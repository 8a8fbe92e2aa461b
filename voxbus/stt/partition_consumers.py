"""The work stream consumers of the partitions this STT process holds (see partitions.py).

One durable per partition (`<prefix>-stt-p<N>`, filter `<prefix>.sttwork.*.*.<N>`) carries the
partition's frames and end events. Binding one waits while the process that held it before
still does; the wait is a task of its own, so one slow handover holds up no other partition, and
losing the partition meanwhile cancels it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

from nats.aio.msg import Msg
from nats.js.kv import KeyValue

from voxbus.bus import Bus
from voxbus.consumer_floors import KeptConsumer

log = logging.getLogger(__name__)

BIND_RETRY_S = (0.5, 5.0)


class PartitionConsumers:
    def __init__(self, bus: Bus, kv: KeyValue, cb: Callable[[Msg], Awaitable[None]], common: dict, subs: list,
                 forget: Callable[[int], None]) -> None:
        """`subs`: the service's subscriptions, which a bound partition joins (its status and
        housekeeping see it); `forget(p)`: drop the sessions of a partition given up."""
        self.bus, self.kv, self.cb, self.common, self.subs, self.forget = bus, kv, cb, common, subs, forget
        self.bound: dict[int, KeptConsumer] = {}
        self._binding: dict[int, asyncio.Task] = {}

    async def gain(self, p: int) -> None:
        s = self.bus.subjects
        kept = KeptConsumer(self.bus, self.kv, stream=s.stt_work_stream(), durable=s.consumer(f"stt-p{p}"),
                            filter_subject=s.stt_partition(p), cb=self.cb, **self.common)
        self._binding[p] = asyncio.create_task(self._bind(p, kept), name=f"stt-bind-p{p}")

    async def _bind(self, p: int, kept: KeptConsumer) -> None:
        wait = BIND_RETRY_S[0]
        try:
            while True:
                try:
                    await kept.bind()
                    break
                except Exception as exc:  # a reconnect, an election: the partition waits, nothing is lost
                    log.warning("could not bind STT partition %d (%r); trying again in %.1fs", p, exc, wait)
                    await asyncio.sleep(wait)
                    wait = min(wait * 2, BIND_RETRY_S[1])
        except asyncio.CancelledError:
            await kept.unsubscribe()  # lost while binding: hold nothing of it
            raise
        self._binding.pop(p, None)
        self.bound[p] = kept
        self.subs.append(kept)
        log.info("STT partition %d: taken", p)

    async def lose(self, p: int) -> None:
        task = self._binding.pop(p, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        kept = self.bound.pop(p, None)
        if kept is not None:
            self.subs.remove(kept)
            await kept.unsubscribe()
            log.info("STT partition %d: given up", p)
        self.forget(p)

    async def stop_binding(self) -> None:
        """The service stops: no partition is bound any more (those bound are in `subs`)."""
        tasks = list(self._binding.values())
        self._binding.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
