"""Requests the manager holds: their deadline, whether their caller is still there, and retries.

- **Deadline.** The caller says how long it will still wait (``Vox-Deadline``, seconds: relative,
  because clocks differ between machines). Work not started by then is dropped; a running
  generation is stopped.
- **Caller gone.** Heartbeats are published with a probe reply subject; the server answers it with
  a no-responders status as soon as the caller's inbox has no subscriber (the caller timed out,
  retried on a new inbox, or died). Unless a retry joins within half a second, the request is
  then cancelled: dropped from its queue, or stopped if it is a running generation.
- **Retries join.** Every attempt of one call carries the same ``Vox-Request-Id``. An attempt that
  arrives while an earlier one is still queued or running is attached to it instead of running
  the same work twice: what the earlier attempt already answered (a generation's first chunks)
  is sent again to the new inbox, in order, and the rest of the answer follows it there.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import Callable

from nats.aio.client import Client
from nats.aio.msg import Msg

from voxbus.manager.replies import ReplyChannel
from voxbus.messages.headers import ACCEPTED, WORKING
from voxbus.messages.headers import DEADLINE as DEADLINE_HEADER
from voxbus.messages.headers import REQUEST_ID as REQUEST_ID_HEADER

log = logging.getLogger(__name__)


CALLER_GONE = "caller gone"
DEADLINE = "deadline passed"
SHUTDOWN = "manager shutting down"
CALLER_GRACE = 0.5  # seconds a retry has to join before a gone caller's work is dropped


class RequestContext:
    def __init__(self, number: int, key: str | None, endpoint: str, reply: ReplyChannel, deadline: float | None) -> None:
        self.number = number
        self.key = key
        self.endpoint = endpoint
        self.reply = reply
        self.deadline = deadline
        self.cancelled: str | None = None
        self.sent: list[tuple[bytes, dict[str, str] | None]] = []  # replayed to a retry that joins
        self._sending = asyncio.Lock()
        self.position: Callable[[], int | None] = lambda: None
        """Requests ahead of this one in its model's queue (0: running); set by the pool."""
        self._on_cancel: dict[int, Callable[[str], None]] = {}
        self._hooks = itertools.count()

    def on_cancel(self, callback: Callable[[str], None]) -> Callable[[], None]:
        """Call `callback(reason)` if this request is cancelled; returns the unhook function."""
        if self.cancelled:
            callback(self.cancelled)
            return lambda: None
        n = next(self._hooks)
        self._on_cancel[n] = callback
        return lambda: self._on_cancel.pop(n, None)

    def cancel(self, reason: str) -> None:
        if self.cancelled:
            return
        self.cancelled = reason
        for callback in list(self._on_cancel.values()):
            try:
                callback(reason)
            except Exception:
                log.exception("cancel hook")

    async def send(self, data: bytes, headers: dict[str, str] | None = None) -> None:
        """Answer (part of) the request; kept until it ends, for a retry that joins."""
        async with self._sending:
            self.sent.append((data, headers))
            await self.reply.send(data, headers)

    async def error(self, exc) -> None:
        async with self._sending:
            self.sent.append(self.reply.error_message(exc))
            await self.reply.error(exc)

    async def rejoin(self, channel: ReplyChannel) -> None:
        """A retry of this request arrived on `channel`: answer there from now on, from the start."""
        async with self._sending:
            self.reply = channel
            await channel.status(ACCEPTED)
            for data, headers in self.sent:
                await channel.send(data, headers)

    def time_left(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()


class RequestTracker:
    def __init__(self, nc: Client, heartbeat: float, manager_id: str | None = None) -> None:
        self.nc = nc
        self.manager_id = manager_id
        self.heartbeat = heartbeat
        self.open: dict[int, RequestContext] = {}
        self._by_key: dict[str, RequestContext] = {}
        self._probes: dict[str, tuple[RequestContext, str]] = {}
        self._numbers = itertools.count(1)
        self._tokens = itertools.count(1)
        self._base = ""
        self._sub = None
        self._ticker: asyncio.Task | None = None

    async def start(self) -> None:
        self._base = self.nc.new_inbox()
        self._sub = await self.nc.subscribe(self._base + ".*", cb=self._on_probe)
        self._ticker = asyncio.create_task(self._tick())

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        if self._sub is not None:
            sub, self._sub = self._sub, None
            try:
                await sub.unsubscribe()
            except Exception as exc:
                log.debug("probe unsubscribe: %s", exc)

    def begin(self, msg: Msg, endpoint: str) -> tuple[RequestContext, bool]:
        """(context, joined): joined means an earlier attempt of the same call now answers this one."""
        headers = msg.headers or {}
        key = headers.get(REQUEST_ID_HEADER) or None
        earlier = self._by_key.get(key) if key else None
        if earlier is not None and earlier.endpoint == endpoint and not earlier.cancelled:
            log.info("request %s retried while still in progress: joining it", key)
            return earlier, True
        deadline = None
        try:
            if DEADLINE_HEADER in headers:
                deadline = time.monotonic() + max(0.0, float(headers[DEADLINE_HEADER]))
        except ValueError:
            log.warning("ignoring a malformed %s header: %r", DEADLINE_HEADER, headers[DEADLINE_HEADER])
        n = next(self._numbers)
        ctx = RequestContext(n, key, endpoint, ReplyChannel(self.nc, msg.reply, manager=self.manager_id), deadline)
        ctx.reply = self._channel(ctx, msg.reply)  # the same inbox, with this request's probe
        self.open[n] = ctx
        if key:
            self._by_key[key] = ctx
        return ctx, False

    def end(self, ctx: RequestContext) -> None:
        self.open.pop(ctx.number, None)
        if ctx.key and self._by_key.get(ctx.key) is ctx:
            del self._by_key[ctx.key]
        for token in [t for t, (c, _) in self._probes.items() if c is ctx]:
            del self._probes[token]

    async def accepted(self, ctx: RequestContext) -> None:
        await self._status(ctx, ACCEPTED)

    async def join(self, ctx: RequestContext, msg: Msg) -> None:
        """Attach a retry (msg) to the earlier attempt ctx."""
        await ctx.rejoin(self._channel(ctx, msg.reply))

    def cancel_all(self, endpoint: str, reason: str) -> None:
        for ctx in list(self.open.values()):
            if ctx.endpoint == endpoint:
                ctx.cancel(reason)

    # -- internals ---------------------------------------------------------------------------
    def _channel(self, ctx: RequestContext, inbox: str) -> ReplyChannel:
        token = f"{ctx.number}-{next(self._tokens)}"
        self._probes[token] = (ctx, inbox)
        return ReplyChannel(self.nc, inbox, probe=f"{self._base}.{token}", manager=self.manager_id)

    async def _status(self, ctx: RequestContext, status: str) -> None:
        try:
            await ctx.reply.status(status, ctx.position() if status == WORKING else None)
        except Exception as exc:
            log.debug("heartbeat to %s failed: %s", ctx.reply.inbox, exc)

    async def _on_probe(self, msg: Msg) -> None:
        if (msg.headers or {}).get("Status") != "503":
            return
        found = self._probes.get(msg.subject.rsplit(".", 1)[-1])
        if found is None:
            return
        ctx, inbox = found
        # A caller that retries drops its old inbox first, then sends the retry: give the retry a
        # moment to join before the work is dropped.
        asyncio.get_running_loop().call_later(CALLER_GRACE, self._gone, ctx, inbox)

    def _gone(self, ctx: RequestContext, inbox: str) -> None:
        if ctx.number in self.open and ctx.reply.inbox == inbox:  # no retry took it over meanwhile
            log.info("request %d (%s): the caller is gone; dropping its work", ctx.number, ctx.endpoint)
            ctx.cancel(CALLER_GONE)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)
            now = time.monotonic()
            for ctx in list(self.open.values()):
                if ctx.deadline is not None and now >= ctx.deadline:
                    ctx.cancel(DEADLINE)
                elif not ctx.cancelled:
                    await self._status(ctx, WORKING)
