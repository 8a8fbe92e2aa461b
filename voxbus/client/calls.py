"""One request to the ModelManager over NATS, with its deadline, liveness and retry rules.

Protocol (see voxbus/manager/replies.py): the manager answers ``accepted`` at once, ``working``
heartbeats while busy, then the reply (or a stream ending in ``done``). So:

- no ``accepted`` within accept_timeout, or a no-responders status: nobody has the work ->
  transient, retried with backoff;
- heartbeats stop for liveness_timeout after acceptance: that manager died -> retried if the
  caller has not yet received part of the answer, else a transient ``Unavailable`` error;
- the overall deadline passes while the manager is alive and working -> ``Timeout``, not retried
  (repeating would only queue the same work twice);
- an error reply -> its typed exception; retried only if the manager marked it transient, and
  then: ``model_crashed`` at most once (a fresh worker serves the retry; a model that keeps
  crashing is quarantined), ``overloaded`` never (retrying at once only adds load; the error says
  when to come back, ``retry_after``).

Every attempt of one call carries the same ``Vox-Request-Id``, so a manager that still holds an
earlier attempt joins the retry to it instead of doing the work twice, and ``Vox-Deadline`` (the
seconds the caller will still wait), so a manager drops work nobody will wait for.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from typing import AsyncIterator, Callable

import nats.errors
import stamina
from nats.aio.client import Client
from nats.aio.msg import Msg

from voxbus.auth.violations import guarded
from voxbus.config.schema import ClientConfig
from voxbus.errors import ModelCrashed, ModelError, Overloaded, PayloadTooLarge, Timeout, Unavailable, error_from_wire
from voxbus.messages import headers as h
from voxbus.messages import codec
from voxbus.messages.model import ErrorReply

log = logging.getLogger(__name__)

NO_RESPONDERS = "503"
MAX_BACKOFF_S = 5.0


class _Retry(Exception):
    def __init__(self, error: ModelError) -> None:
        self.error = error


def _error_of(msg: Msg) -> ModelError | None:
    headers = msg.headers or {}
    if headers.get("Status") == NO_RESPONDERS:
        return Unavailable("no ModelManager is serving this endpoint (is `voxbus manager` running?)")
    if h.ERROR_CODE not in headers:
        return None
    try:
        body = codec.decode(msg.data, ErrorReply)
        return error_from_wire(body.code, body.message, body.transient, body.retry_after)
    except Exception:
        return ModelError(headers.get(h.ERROR, "unknown error"), code=f"status_{headers[h.ERROR_CODE]}")


class Caller:
    def __init__(self, nc: Client, config: ClientConfig) -> None:
        self.nc = nc
        self.config = config

    async def stream(self, subject: str, data: bytes, headers: dict[str, str] | None = None,
                     deadline: float | None = None, *, fallback: str | None = None,
                     on_accepted: Callable[[Msg], None] | None = None) -> AsyncIterator[Msg]:
        """Yield the answer's messages (heartbeats filtered out); retries as the module says.
        fallback: where retries go once an attempt on `subject` fails (one manager's own subject
        first, then any manager). on_accepted: called with the accepting manager's status message."""
        cfg = self.config
        target = [subject]
        end = time.monotonic() + (deadline or cfg.deadline)
        headers = {**(headers or {}), h.REQUEST_ID: uuid.uuid4().hex}
        yielded, crashes, retries = False, 0, 0

        def retryable(exc: BaseException) -> bool | float:
            """Whether to retry, and then after how long: exponential backoff with jitter, never
            past the deadline (the caller should get the real error, not a timeout)."""
            nonlocal crashes, retries
            left = end - time.monotonic()
            if not isinstance(exc, _Retry) or yielded or left <= 0:
                return False
            if isinstance(exc.error, Overloaded) or (isinstance(exc.error, ModelCrashed) and crashes):
                return False
            crashes += isinstance(exc.error, ModelCrashed)
            if fallback and target[0] != fallback:
                log.info("%s: %s; asking any manager", subject, exc.error.message)
                target[0] = fallback
                return 0.001  # (at once: another manager is the remedy, not waiting)
            backoff = float(cfg.backoff)
            wait = min(backoff * 2 ** retries + random.uniform(0, backoff), MAX_BACKOFF_S, left)
            retries += 1
            log.info("%s: %s; retrying in %.2fs", subject, exc.error.message, wait)
            return wait

        try:
            async for attempt in stamina.retry_context(on=retryable, attempts=cfg.retries + 1, timeout=None):
                with attempt:
                    async for msg in self._attempt(target[0], data, headers, end, on_accepted):
                        yielded = True
                        yield msg
                    return
        except _Retry as retry:
            raise retry.error from None

    async def request(self, subject: str, data: bytes, headers: dict[str, str] | None = None,
                      deadline: float | None = None) -> Msg:
        async for msg in self.stream(subject, data, headers, deadline):
            return msg
        raise Unavailable(f"{subject}: the manager closed the reply without an answer")

    async def _attempt(self, subject: str, data: bytes, headers: dict[str, str], end: float,
                       on_accepted: Callable[[Msg], None] | None = None) -> AsyncIterator[Msg]:
        cfg = self.config
        inbox = self.nc.new_inbox()
        sub = await self.nc.subscribe(inbox)
        headers = {**headers, h.DEADLINE: f"{max(end - time.monotonic(), 0.0):.3f}"}
        try:
            try:
                await self.nc.publish(subject, data, reply=inbox, headers=headers)
            except nats.errors.MaxPayloadError:
                raise PayloadTooLarge(f"request of {len(data)} bytes is over the server's max_payload") from None
            accepted = False
            while True:
                now = time.monotonic()
                if now >= end:  # a timeout after acceptance is final: the work may be running still
                    raise Timeout(f"{subject}: no answer within the deadline", transient=not accepted)
                wait = min(end - now, cfg.liveness_timeout if accepted else cfg.accept_timeout)
                try:  # (a publish the server refused fails here at once, naming the subject)
                    msg = await guarded(self.nc, sub.next_msg(timeout=wait), subject)
                except nats.errors.TimeoutError:
                    if time.monotonic() >= end:
                        if accepted:
                            raise Timeout(f"{subject}: the manager is still working but the deadline passed",
                                          transient=False) from None
                        raise _Retry(Timeout(f"{subject}: no manager accepted the request in time")) from None
                    if accepted:
                        raise _Retry(Unavailable(f"{subject}: the manager stopped answering mid-request")) from None
                    raise _Retry(Unavailable(f"{subject}: no manager accepted the request within "
                                             f"{cfg.accept_timeout:g}s")) from None
                status = (msg.headers or {}).get(h.STATUS)
                if status in (h.ACCEPTED, h.WORKING):
                    if status == h.ACCEPTED and on_accepted is not None:
                        on_accepted(msg)
                    accepted = True
                    continue
                error = _error_of(msg)
                if error is not None:
                    raise _Retry(error) if error.transient else error
                accepted = True
                yield msg
        finally:
            try:
                await sub.unsubscribe()
            except Exception:
                pass
