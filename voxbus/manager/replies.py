"""How the manager answers on a request's reply inbox.

Every request first gets an empty ``Vox-Status: accepted`` message, then ``Vox-Status: working``
heartbeats while it runs (model loads can take minutes), then its answer: one reply, or for
generate a stream of chunks ending in ``done``. Errors carry the NATS micro error headers plus an
ErrorReply body. The heartbeats let a client tell a slow manager from a dead one, and retry only
work that no manager is doing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import AsyncIterator

from nats.aio.client import Client

from voxbus.errors import ModelError
from voxbus.messages import codec
from voxbus.messages.model import ErrorReply

log = logging.getLogger(__name__)

STATUS_HEADER = "Vox-Status"
ACCEPTED = "accepted"
WORKING = "working"
ERROR_HEADER = "Nats-Service-Error"
ERROR_CODE_HEADER = "Nats-Service-Error-Code"


class ReplyChannel:
    def __init__(self, nc: Client, inbox: str) -> None:
        self.nc = nc
        self.inbox = inbox

    async def status(self, status: str) -> None:
        await self.nc.publish(self.inbox, b"", headers={STATUS_HEADER: status})

    async def send(self, data: bytes, headers: dict[str, str] | None = None) -> None:
        await self.nc.publish(self.inbox, data, headers=headers)

    async def error(self, exc: ModelError) -> None:
        body = ErrorReply(code=exc.code, message=exc.message, transient=exc.transient)
        # Header values cannot hold newlines.
        desc = exc.message.replace("\r", " ").replace("\n", " ")[:1024]
        try:
            await self.send(codec.encode(body), {ERROR_CODE_HEADER: str(exc.status), ERROR_HEADER: desc})
        except Exception as send_exc:
            log.warning("could not deliver error reply: %s", send_exc)

    @contextlib.asynccontextmanager
    async def heartbeats(self, interval: float) -> AsyncIterator[None]:
        await self.status(ACCEPTED)

        async def beat() -> None:
            while True:
                await asyncio.sleep(interval)
                try:
                    await self.status(WORKING)
                except Exception:
                    return

        task = asyncio.create_task(beat())
        try:
            yield
        finally:
            task.cancel()
