"""What every long-running voxbus service (STT, TTS, assistant) does the same way: it is an async
context manager around start() and stop(), holds its NATS subscriptions, and at stop
unsubscribes them (a connection already gone is no error) and ends its per-session tasks; its
long-lived loops run supervised: restarted with backoff if they die, and counted. Each process is
also a NATS micro service (`<prefix>-<service>`) whose `status` endpoint answers a ServiceStatus,
so `$SRV.STATS` shows every instance's health and load."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import Awaitable, Callable, Iterable

import msgspec

from voxbus import __version__
from voxbus.consumer_floors import KeptConsumer, state_bucket
from voxbus.messages import codec
from voxbus.messages.status import ServiceStatus
from voxbus.micro import MicroService

log = logging.getLogger(__name__)


RESTART_WAIT_S = (0.1, 5.0)
"""Backoff between restarts of a task that died: from the first to the longest wait, doubling."""
UNHEALTHY_AFTER = 5
"""Restarts of one task within UNHEALTHY_WINDOW_S that mark the service unhealthy."""
UNHEALTHY_WINDOW_S = 60.0


class BusService:
    service_kind = "service"
    """The service's name in subjects: stt, tts, assistant."""

    def __init__(self) -> None:
        self._subs: list = []
        self.restarts: dict[str, list[float]] = {}  # task name -> monotonic times it was restarted
        self._micro: MicroService | None = None
        self._watching: asyncio.Task | None = None  # the loop checking kept consumers (TTS, assistant)

    def status(self) -> ServiceStatus:
        """What `<prefix>.status.<service>` answers; services add their load to it."""
        now = time.monotonic()
        recent = {name: sum(now - at < UNHEALTHY_WINDOW_S for at in times) for name, times in self.restarts.items()}
        return ServiceStatus(service=self.service_kind, instance=self._micro.id if self._micro else "",
                             healthy=self.healthy, restarts={name: n for name, n in recent.items() if n})

    async def _keep_consumer(self, bus, *, ack_wait: float, **bind) -> KeptConsumer:
        """Bind a durable consumer (KeptConsumer: bound again where it was if someone deletes it)
        and watch it with the service's other kept consumers."""
        kept = await KeptConsumer(bus, await state_bucket(bus), ack_wait=ack_wait, **bind).bind()
        if self._watching is None:
            period = max(min(ack_wait / 3, 5.0), 0.2)
            self._watching = self._supervised(f"{self.service_kind}-consumers", lambda: self._watch_consumers(period))
        self._subs.append(kept)
        return kept

    async def _watch_consumers(self, period: float) -> None:
        while True:
            await asyncio.sleep(period)
            await self._check_consumers()

    async def _check_consumers(self) -> None:
        """Record where each kept consumer got to; bind one someone deleted again there."""
        for consumer in [s for s in self._subs if isinstance(s, KeptConsumer)]:
            try:
                await consumer.check()
            except Exception:  # a reconnect, say: the next period tries again
                log.exception("checking consumer %s failed", consumer.durable)

    async def _announce(self, bus, description: str) -> None:
        """Make this process discoverable (`$SRV.PING/INFO/STATS`) with its `status` endpoint."""
        self._micro = await MicroService(
            bus.nc, name=bus.subjects.service_name(self.service_kind), version=__version__, description=description,
            metadata={"pid": str(os.getpid()), "host": socket.gethostname()},
            queue_group=bus.subjects.queue_group(self.service_kind),
            stats_data=lambda endpoint: msgspec.to_builtins(self.status())).start()

        async def answer(msg) -> None:
            if msg.reply:
                await msg.respond(codec.encode(self.status()))
        await self._micro.add_endpoint("status", bus.subjects.status(self.service_kind), answer)

    @property
    def healthy(self) -> bool:
        """False while some task of the service keeps dying (UNHEALTHY_AFTER restarts within
        UNHEALTHY_WINDOW_S): it is restarted still, but somebody should look."""
        now = time.monotonic()
        return all(sum(now - at < UNHEALTHY_WINDOW_S for at in times) < UNHEALTHY_AFTER
                   for times in self.restarts.values())

    def _supervised(self, name: str, loop: Callable[[], Awaitable[None]]) -> asyncio.Task:
        """Run one of the service's long-lived loops; if it dies (a bug, a library error nobody
        caught), log it and start it again after a growing wait, so the service never goes
        quietly deaf while its process lives."""
        async def keep() -> None:
            wait = RESTART_WAIT_S[0]
            while True:
                started = time.monotonic()
                try:
                    await loop()
                    return  # (a loop that ends on its own is done)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("task %s died; starting it again in %.1f s", name, wait)
                if time.monotonic() - started > UNHEALTHY_WINDOW_S:
                    wait = RESTART_WAIT_S[0]  # it ran well for a while: a fresh failure, not a loop
                await asyncio.sleep(wait)
                wait = min(wait * 2, RESTART_WAIT_S[1])
                self.restarts.setdefault(name, []).append(time.monotonic())
                self.restarts[name] = self.restarts[name][-UNHEALTHY_AFTER:]
                if not self.healthy:
                    log.error("task %s keeps dying (%d restarts in %.0f s): this service is unhealthy",
                              name, UNHEALTHY_AFTER, UNHEALTHY_WINDOW_S)
        return asyncio.create_task(keep(), name=name)

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self):
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    async def _unsubscribe(self) -> None:
        watching, self._watching = self._watching, None
        if watching is not None:
            await self._end_tasks([watching])
        micro, self._micro = self._micro, None
        if micro is not None:
            await micro.stop()
        subs, self._subs = self._subs, []
        for sub in subs:
            try:
                await sub.unsubscribe()
            except Exception as exc:  # the connection may already be gone
                log.debug("unsubscribe: %s", exc)

    @staticmethod
    async def _end_tasks(tasks: Iterable[asyncio.Task | None], grace: float = 0.0) -> None:
        """Let the tasks finish for up to `grace` seconds, then cancel what is left."""
        tasks = [t for t in tasks if t is not None]
        if tasks and grace > 0:
            await asyncio.wait(tasks, timeout=grace)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
