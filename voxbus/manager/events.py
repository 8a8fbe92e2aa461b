"""Admin broadcasts: model lifecycle events and resource snapshots on {p}.admin.*.

Published as core NATS messages; the ADMIN stream captures them, so history is replayable.
A broadcast that fails (bus down) is logged and dropped: it must never fail a request.
"""

from __future__ import annotations

import logging
import time

from nats.aio.client import Client

from voxbus.messages import codec
from voxbus.messages.admin import CacheEvent, ModelEvent, ResourceSnapshot
from voxbus.subjects import Subjects

log = logging.getLogger(__name__)


class AdminPublisher:
    def __init__(self, nc: Client, subjects: Subjects, manager_id: str) -> None:
        self.nc = nc
        self.subjects = subjects
        self.manager_id = manager_id

    async def model(self, event: str, model: str, kind: str = "", *, reason: str = "", ram: int = 0,
                    vram: int = 0, load_ms: float = 0.0, detail: str = "", pid: int | None = None,
                    exit_code: int | None = None, signal: str | None = None, stderr: list[str] | None = None) -> None:
        msg = ModelEvent(ts=time.time(), manager=self.manager_id, event=event, model=model, kind=kind,
                         reason=reason, ram_bytes=ram, vram_bytes=vram, load_ms=round(load_ms, 1), detail=detail,
                         pid=pid, exit_code=exit_code, signal=signal, stderr=list(stderr or []))
        log.info("model %s %s%s", model, event, f" ({reason})" if reason else "")
        await self._send(self.subjects.admin("model"), codec.encode(msg))

    async def snapshot(self, snap: ResourceSnapshot) -> None:
        snap.ts, snap.manager = time.time(), self.manager_id
        await self._send(self.subjects.admin("resources"), codec.encode(snap))

    async def cache(self, event: CacheEvent) -> None:
        event.ts, event.manager = time.time(), self.manager_id
        await self._send(self.subjects.admin("cache"), codec.encode(event))

    async def _send(self, subject: str, data: bytes) -> None:
        try:
            await self.nc.publish(subject, data)
        except Exception as exc:
            log.warning("admin event on %s dropped: %s", subject, exc)
