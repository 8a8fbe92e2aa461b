"""A service's durable consumer that stays where it was, even when someone deletes it.

A deleted durable takes its ack floor with it: created again at DeliverPolicy NEW, it would skip
everything sent meanwhile. So the service records each consumer's floor (the first stream
sequence not yet acknowledged, read from the consumer's info) in a JetStream Key-Value bucket
(`<PREFIX>_STATE`, one key per durable) every time it checks it. A consumer found gone, while the
service runs or when it starts, is bound again at the last recorded floor; what it delivers
again, the service already knows how to recognise (frames covered or held, see consumers.py).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Awaitable, Callable

from nats.aio.msg import Msg
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from voxbus.bus import Bus
from voxbus.consumers import bind_resuming
from voxbus.messages import codec
from voxbus.messages.admin import RetentionWarning

log = logging.getLogger(__name__)

WARN_HEADROOM = 0.2
"""Warn when fewer than this share of the stream's capacity is left before unread messages go."""
WARN_EVERY_S = 60.0
STANDBY_POLL_S = 1.0
"""How often a standby asks whether the consumer it waits for is free."""


def retention_capacity(messages: int, size: int, max_bytes: int, max_msgs: int) -> int | None:
    """About how many messages of the current average size the stream holds at its limits;
    None if it has no limits or no messages to judge their size by."""
    limits = []
    if max_msgs and max_msgs > 0:
        limits.append(max_msgs)
    if max_bytes and max_bytes > 0 and messages:
        limits.append(int(max_bytes / (size / messages)))
    return min(limits) if limits else None


STATE_BUCKET_BYTES = 8 << 20
"""One small key per durable consumer; a declared size also lets JetStream reserve it."""


async def state_bucket(bus: Bus) -> KeyValue:
    name = bus.subjects.state_bucket()
    try:
        return await bus.js.key_value(name)
    except BucketNotFoundError:
        return await bus.js.create_key_value(KeyValueConfig(
            bucket=name, history=1, storage=StorageType.FILE, replicas=bus.config.streams.replicas,
            max_bytes=STATE_BUCKET_BYTES,
            description="voxbus: where each service's durable consumers had got to"))


class KeptConsumer:
    """One durable push consumer of a service, bound resuming, its floor recorded by check()."""

    def __init__(self, bus: Bus, kv: KeyValue, *, stream: str, durable: str, filter_subject: str,
                 cb: Callable[[Msg], Awaitable[None]], ack_wait: float, max_ack_pending: int,
                 start_new: bool) -> None:
        self.bus, self.kv = bus, kv
        self.stream, self.durable = stream, durable
        self._bind = dict(stream=stream, durable=durable, filter_subject=filter_subject, cb=cb,
                          ack_wait=ack_wait, max_ack_pending=max_ack_pending, start_new=start_new)
        self.sub = None
        self.rebound = 0
        self.pending = 0  # not yet acknowledged, as of the last check()
        self.replay_horizon = 0  # bound again: stream sequences up to this one may be delivered twice
        self.service = durable
        self._warned, self._warned_at = False, 0.0
        self.standby = False  # waiting for another process to let go of the consumer

    async def bind(self) -> "KeptConsumer":
        await self._while_bound_elsewhere()
        self.sub = await bind_resuming(self.bus.js, recorded_floor=await self._recorded(), **self._bind)
        await self.check()
        return self

    async def _while_bound_elsewhere(self) -> None:
        """A second process of the same service waits as a standby while the first holds the
        consumer (the server says `push_bound` while a live subscription takes it). Binding would
        delete and recreate it under the first, and the two would split sessions' frames. The
        standby takes over once the holder is gone: at once for a closed or killed process, after
        the server's ping timeout for a frozen one."""
        announced = False
        while True:
            try:
                info = await self.bus.js.consumer_info(self.stream, self.durable)
            except NotFoundError:
                return
            if not info.push_bound:
                if announced:
                    log.warning("%s: consumer %s is free; taking over", self.stream, self.durable)
                self.standby = False
                return
            if not announced:
                log.warning("%s: consumer %s is in use by another process of this service; standing by until "
                            "it is free", self.stream, self.durable)
                announced = self.standby = True
            await asyncio.sleep(STANDBY_POLL_S * random.uniform(0.75, 1.25))  # (standbys do not wake together)

    async def check(self) -> None:
        """Record where the consumer has got to; bind it again where it was if it is gone."""
        try:
            info = await self.bus.js.consumer_info(self.stream, self.durable)
        except NotFoundError:
            log.warning("%s: consumer %s was deleted", self.stream, self.durable)
            await self.bus.heal_streams()  # (or its stream was)
            await self.unsubscribe()
            self.replay_horizon = (await self.bus.js.stream_info(self.stream)).state.last_seq
            self.sub = await bind_resuming(self.bus.js, recorded_floor=await self._recorded(), **self._bind)
            self.rebound += 1
            return
        self.pending = (info.num_pending or 0) + (info.num_ack_pending or 0)
        floor = (info.ack_floor.stream_seq if info.ack_floor and info.ack_floor.stream_seq else 0) + 1
        await self.kv.put(self.durable, str(floor).encode())
        await self._watch_retention(floor)

    async def _watch_retention(self, floor: int) -> None:
        """Warn on the admin subject before the stream's limits drop messages not yet taken: by
        size (max_bytes / max_msgs) or by age (max_age)."""
        stream = await self.bus.js.stream_info(self.stream)
        state, cfg = stream.state, stream.config
        unacked = max(state.last_seq - floor + 1, 0) if state.messages else 0
        capacity = retention_capacity(state.messages, state.bytes, cfg.max_bytes, cfg.max_msgs)
        headroom = capacity - unacked if capacity is not None else 0
        oldest = await self._oldest_age(floor) if unacked and cfg.max_age else 0.0
        full = capacity is not None and unacked > 0 and headroom < capacity * WARN_HEADROOM
        old = bool(cfg.max_age) and oldest > cfg.max_age * (1 - WARN_HEADROOM)
        low, now = full or old, time.monotonic()
        if low and (not self._warned or now - self._warned_at >= WARN_EVERY_S):
            level = "warning"
        elif not low and self._warned:
            level = "ok"
        else:
            return
        self._warned, self._warned_at = low, now
        event = RetentionWarning(ts=time.time(), manager=self.service, level=level, stream=self.stream,
                                 consumer=self.durable, unacknowledged=unacked, headroom=max(headroom, 0),
                                 capacity=capacity or 0, oldest_age=round(oldest, 3), max_age=cfg.max_age or 0.0)
        if full:
            log.warning("%s: %d messages not yet taken by %s; the stream's limits drop the oldest in about %d more",
                        self.stream, unacked, self.durable, max(headroom, 0))
        if old:
            log.warning("%s: the oldest message not yet taken by %s is %.0f s old; the stream drops messages "
                        "after %.0f s", self.stream, self.durable, oldest, cfg.max_age)
        await self.bus.store(self.bus.subjects.admin("retention"), codec.encode(event))

    async def _oldest_age(self, floor: int) -> float:
        """Seconds since the first message at or past the floor that this consumer takes was stored."""
        try:
            msg = await self.bus.js.get_msg(self.stream, seq=floor, subject=self._bind["filter_subject"], next=True)
        except NotFoundError:
            return 0.0
        return max(0.0, time.time() - msg.time.timestamp()) if msg.time else 0.0

    async def _recorded(self) -> int | None:
        try:
            entry = await self.kv.get(self.durable)
        except KeyNotFoundError:
            return None
        floor = int(entry.value) if entry.value else None
        if floor is not None:  # a stream created again numbers from 1: a floor past its end is stale
            state = (await self.bus.js.stream_info(self.stream)).state
            if floor > state.last_seq + 1:
                floor = max(state.first_seq, 1)
        return floor

    async def unsubscribe(self) -> None:
        sub, self.sub = self.sub, None
        if sub is not None:
            try:
                await sub.unsubscribe()
            except Exception as exc:  # the connection, or the consumer, may already be gone
                log.debug("unsubscribe: %s", exc)
