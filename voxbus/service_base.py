"""What every long-running voxbus service (STT, TTS, assistant) does the same way: it is an async
context manager around start() and stop(), holds its NATS subscriptions, and at stop
unsubscribes them (a connection already gone is no error) and ends its per-session tasks."""

from __future__ import annotations

import asyncio
import logging
from typing import Iterable

log = logging.getLogger(__name__)


class BusService:
    def __init__(self) -> None:
        self._subs: list = []

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
