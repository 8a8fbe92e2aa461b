"""Telling a session that something about it went wrong, on its own control subject."""

from __future__ import annotations

import logging
import time

from voxbus.bus import Bus
from voxbus.messages import codec
from voxbus.messages.control import SessionError

log = logging.getLogger(__name__)


async def report_session_error(bus: Bus, sid: str, code: str, message: str, *, seq: int | None = None,
                               msg_id: str | None = None) -> None:
    """Publish a SessionError on ``{p}.ctl.<sid>.error``; a failure to do so is logged, never
    raised, so reporting one session's problem cannot take a service down."""
    log.warning("session %s: %s: %s", sid, code, message)
    event = SessionError(session=sid, ts=time.time(), code=code, message=message, seq=seq)
    try:
        await bus.js.publish(bus.subjects.control(sid, "error"), codec.encode(event),
                             headers={"Nats-Msg-Id": msg_id} if msg_id else None)
    except Exception as exc:
        log.warning("could not publish an error event for %s: %s", sid, exc)
