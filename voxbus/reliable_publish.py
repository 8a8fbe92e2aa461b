"""Publishing a session's frames so that a broker restart loses nothing it could have kept.

Frames go out through JetStream async publish, many in flight, each with a `Nats-Msg-Id`
(`<sid>:f<seq>`). A frame whose PubAck fails or does not come within `ingest.ack_timeout` is
taken as not stored: it and every frame sent after it are published again, one at a time in
order, each waiting for its ack; copies the server already stored are dropped there by their
id. (Frames the client buffered while disconnected may be stored before an earlier one sent
again: the STT service puts a session's frames back in order, `stt.reorder_wait`.) A frame that
still cannot be stored when `ingest.retry_window` has passed since the outage began is counted
as lost; the caller reports the count, and the session's end event still goes out.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js.api import PubAck

from voxbus.errors import StreamFull

log = logging.getLogger(__name__)

_NOT_STORED = (nats.errors.Error, asyncio.TimeoutError, OSError)
FULL = (10077, 10076)
"""JetStream's "maximum bytes exceeded" / "maximum messages exceeded": a discard-new stream full."""


def refuse_if_full(exc: BaseException | None, subject: str) -> None:
    """A full stream will not take the frame however often it is sent: say so at once."""
    if isinstance(exc, nats.js.errors.APIError) and exc.err_code in FULL:
        raise StreamFull(f"{subject}: the stream is full ({exc.description}): it is at its max_bytes, this "
                         f"deployment's or tenant's storage quota, and refuses new audio until old sessions "
                         f"expire or the quota grows") from None


@dataclass
class _InFlight:
    seq: int
    data: bytes
    headers: dict[str, str]
    ack: asyncio.Future | None  # None: the publish itself failed
    sent_at: float

    def stored(self) -> bool:
        return self.ack is not None and self.ack.done() and not self.ack.cancelled() and self.ack.exception() is None


class FramePublisher:
    """Frames of one subject, in flight up to `window`, sent again after an outage."""

    def __init__(self, nc: Client, subject: str, *, window: int, ack_timeout: float, retry_window: float) -> None:
        self.nc = nc
        self.js = nc.jetstream(publish_async_max_pending=window)
        self.subject = subject
        self.ack_timeout = ack_timeout
        self.retry_window = retry_window
        self.lost: list[int] = []
        self._inflight: deque[_InFlight] = deque()
        self._outage_since: float | None = None

    async def send(self, seq: int, data: bytes, headers: dict[str, str]) -> None:
        try:
            ack = await self.js.publish_async(self.subject, data, headers=headers, wait_stall=self.ack_timeout)
        except _NOT_STORED:  # a stalled window (acks stopped coming), or no connection
            ack = None
        self._inflight.append(_InFlight(seq, data, headers, ack, time.monotonic()))
        await self._settle(final=False)

    async def flush(self) -> None:
        """Wait until every frame sent is stored or counted lost."""
        await self._settle(final=True)

    async def _settle(self, final: bool) -> None:
        while self._inflight:
            head = self._inflight[0]
            if head.stored():
                self._inflight.popleft()
                self._outage_since = None
                continue
            if head.ack is not None and head.ack.done() and not head.ack.cancelled():
                refuse_if_full(head.ack.exception(), self.subject)
            if head.ack is not None and not head.ack.done():
                left = head.sent_at + self.ack_timeout - time.monotonic()
                if left > 0:
                    if not final:
                        return
                    await asyncio.wait([head.ack], timeout=left)
                    continue
            await self._resend()

    async def _resend(self) -> None:
        """The oldest frame in flight was not stored: send it and all after it again, in order."""
        entries = list(self._inflight)
        self._inflight.clear()
        for e in entries:
            if e.ack is not None and not e.ack.done():
                e.ack.cancel()  # (frees its place in the window)
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            log.warning("%s: frame %d was not stored; sending it and %d after it again", self.subject,
                        entries[0].seq, len(entries) - 1)
        for e in entries:
            if e.stored():
                continue
            if await store(self.nc, self.js, self.subject, e.data, e.headers,
                           until=self._outage_since + self.retry_window, timeout=self.ack_timeout) is None:
                self.lost.append(e.seq)


async def store(nc: Client, js, subject: str, data: bytes, headers: dict[str, str], *, until: float,
                timeout: float) -> tuple[PubAck, int] | None:
    """Publish one message and wait for its ack, trying again until `until` (monotonic): the ack
    and how many tries it took (a `duplicate` ack on the first says the id was used before), or
    None if it could not be stored."""
    wait, tries = 0.1, 0
    while True:
        try:
            if nc.is_connected:
                tries += 1
                return await js.publish(subject, data, headers=headers, timeout=timeout), tries
        except nats.js.errors.BadRequestError:
            raise
        except _NOT_STORED as exc:
            refuse_if_full(exc, subject)
            log.debug("%s: not stored yet (%s)", subject, type(exc).__name__)
        if time.monotonic() + wait > until:
            return None
        await asyncio.sleep(wait)
        wait = min(wait * 2, 1.0)
