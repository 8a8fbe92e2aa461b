"""The ADMIN stream as a timeline (`voxbus events`): model lifecycle (loading, loaded, evicted,
unloaded, refused, failed, crashed, quarantined), KV-cache events, resource snapshots and
retention warnings, oldest first, from a start time, optionally following new ones.

Read through ephemeral consumers starting at the requested time (no acks: the services never
notice): without `follow`, a pull consumer reads what was stored when it started and stops;
with it, an ordered push consumer goes on with what comes.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import datetime

from nats.js.api import AckPolicy, ConsumerConfig

from voxbus.bus import Bus
from voxbus.config.units import Duration
from voxbus.errors import ConfigError, ProtocolError
from voxbus.history import start_at
from voxbus.messages import codec
from voxbus.messages.admin import AdminEvent, CacheEvent, ModelEvent, ResourceSnapshot, RetentionWarning


def since_time(text: str | None) -> float | None:
    """'1h', '30m', '2d' ago, or an ISO time; None: from the stream's start."""
    if not text:
        return None
    try:
        return time.time() - float(Duration.parse(text))
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"--since {text!r}: give a duration such as 1h or 30m, or a time such as "
                          f"2026-12-04T10:00") from None
    return (moment if moment.tzinfo else moment.astimezone()).timestamp()  # (no zone: local, as printed)


def about_model(event, model: str | None) -> bool:
    return model is None or getattr(event, "model", None) == model


async def events(bus: Bus, since: float | None = None, *, follow: bool = False,
                 model: str | None = None) -> AsyncIterator[AdminEvent]:
    s = bus.subjects
    start = start_at(since)
    if follow:  # an ordered push consumer: history first, then live, in order, resumed after reconnects
        sub = await bus.js.subscribe(s.all_admin(), stream=s.stream("admin"), ordered_consumer=True,
                                     config=ConsumerConfig(**start))
        try:
            async for msg in sub.messages:
                if (event := _decoded(msg)) is not None and about_model(event, model):
                    yield event
        finally:
            await sub.unsubscribe()
        return
    # What is stored now: an ephemeral pull consumer says how many there are before any is fetched.
    sub = await bus.js.pull_subscribe(s.all_admin(), stream=s.stream("admin"), config=ConsumerConfig(
        ack_policy=AckPolicy.NONE, inactive_threshold=30.0, mem_storage=True, **start))
    try:
        left = (await sub.consumer_info()).num_pending
        while left > 0:
            for msg in await sub.fetch(min(left, 256), timeout=10):
                left -= 1
                if (event := _decoded(msg)) is not None and about_model(event, model):
                    yield event
    finally:
        await sub.unsubscribe()


def _decoded(msg):
    try:
        return codec.decode(msg.data, AdminEvent)
    except ProtocolError:
        return None  # (a message this version does not know: skipped, not fatal)


def describe(event) -> str:
    """One readable line, without the time."""
    if isinstance(event, ModelEvent):
        parts = [f"model {event.model}: {event.event}"]
        if event.reason:
            parts.append(f"({event.reason})")
        if event.event == "loaded":
            parts.append(f"in {event.load_ms / 1000:.1f} s, RAM {event.ram_bytes / 2**20:.0f} MiB"
                         + (f", VRAM {event.vram_bytes / 2**20:.0f} MiB" if event.vram_bytes else ""))
        if event.signal or event.exit_code is not None:
            parts.append(f"worker {event.pid}: {event.signal or f'exit {event.exit_code}'}")
        if event.detail:
            parts.append(f"- {event.detail}")
        return " ".join(parts)
    if isinstance(event, CacheEvent):
        return f"cache {event.model}: conversation {event.conversation} {event.event} ({event.bytes / 2**20:.1f} MiB)"
    if isinstance(event, ResourceSnapshot):
        used = event.ram_total_bytes - event.ram_available_bytes
        return (f"resources: manager RSS {event.rss_bytes / 2**20:.0f} MiB, RAM {used / 2**30:.1f} of "
                f"{event.ram_total_bytes / 2**30:.1f} GiB in use" + "".join(
                    f", GPU {g.index} {g.used_bytes / 2**30:.1f}/{g.total_bytes / 2**30:.1f} GiB" for g in event.gpus))
    if isinstance(event, RetentionWarning):
        return f"retention: {codec.encode(event).decode()}"
    return codec.encode(event).decode()


def stamp(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
