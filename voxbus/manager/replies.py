"""How the manager answers on a request's reply inbox.

Every request first gets an empty ``Vox-Status: accepted`` message, then ``Vox-Status: working``
heartbeats while it waits or runs (model loads can take minutes; ``Vox-Queue`` says how many
requests are ahead of it, 0 once it runs), then its answer: one reply, or for generate a stream of
chunks ending in ``done``. Errors carry the NATS micro error headers plus an ErrorReply body. The
heartbeats let a client tell a slow manager from a dead one, and retry only work that no manager
is doing.

Status messages are published with a reply subject of the manager's (``probe``): when the
caller's inbox has no subscriber any more (the caller gave up, retried, or died), the server
answers that subject with a no-responders status, and the manager drops the work.
"""

from __future__ import annotations

import logging

from nats.aio.client import Client

from voxbus.errors import ModelError
from voxbus.messages import codec
from voxbus.messages.model import ErrorReply
from voxbus.messages.headers import ERROR as ERROR_HEADER
from voxbus.messages.headers import ERROR_CODE as ERROR_CODE_HEADER
from voxbus.messages.headers import ACCEPTED
from voxbus.messages.headers import MANAGER as MANAGER_HEADER
from voxbus.messages.headers import QUEUE as QUEUE_HEADER
from voxbus.messages.headers import STATUS as STATUS_HEADER

log = logging.getLogger(__name__)


class ReplyChannel:
    def __init__(self, nc: Client, inbox: str, probe: str | None = None, manager: str | None = None) -> None:
        self.nc = nc
        self.inbox = inbox
        self.probe = probe
        self.manager = manager

    async def status(self, status: str, queue: int | None = None) -> None:
        headers = {STATUS_HEADER: status}
        if queue is not None:
            headers[QUEUE_HEADER] = str(queue)
        if status == ACCEPTED and self.manager:
            headers[MANAGER_HEADER] = self.manager
        await self.nc.publish(self.inbox, b"", reply=self.probe or "", headers=headers)

    async def send(self, data: bytes, headers: dict[str, str] | None = None) -> None:
        await self.nc.publish(self.inbox, data, headers=headers)

    @staticmethod
    def error_message(exc: ModelError) -> tuple[bytes, dict[str, str]]:
        body = ErrorReply(code=exc.code, message=exc.message, transient=exc.transient, retry_after=exc.retry_after)
        # Header values cannot hold newlines.
        desc = exc.message.replace("\r", " ").replace("\n", " ")[:1024]
        return codec.encode(body), {ERROR_CODE_HEADER: str(exc.status), ERROR_HEADER: desc}

    async def error(self, exc: ModelError) -> None:
        try:
            await self.send(*self.error_message(exc))
        except Exception as send_exc:
            log.warning("could not deliver error reply: %s", send_exc)
