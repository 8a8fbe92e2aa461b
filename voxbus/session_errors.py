"""Telling a session that something about it went wrong, on its own control subject."""

from __future__ import annotations

import logging
import time

from voxbus.bus import Bus
from voxbus.messages import codec
from voxbus.messages.control import SessionError

log = logging.getLogger(__name__)

CODES: dict[str, str] = {
    "bad_header": "an audio frame with no `Vox-Meta` header, or one that does not decode as an AudioFrame "
                  "(a missing field, a sample type or rate out of range); the frame is dropped",
    "invalid_audio": "a frame whose PCM is not a whole number of samples of its format, or float audio that is "
                     "not finite or peaks far beyond full scale; the frame is dropped",
    "after_end": "a frame whose `seq` is past the session's end event, or that arrived under the id of a "
                 "session already transcribed (a session id is used once); it is dropped",
    "frames_missing": "frames between two the STT service received never came (their `seq`s are named); the "
                      "session goes on, with silence where they were, so later times stay true",
    "frames_duplicated": "frames whose `seq` the STT service had taken already came again as new messages (a "
                         "client sending them twice without a `Nats-Msg-Id`, or after the duplicate window); the "
                         "copies are dropped, and a run of them is reported once",
    "bad_request": "a say request that does not decode; it is dropped",
    "unavailable": "a say request the TTS service could not take because the bus did not answer when it read "
                   "the session's start event and last chunk (for seconds, retried); it is not spoken",
    "(a model error code)": "an utterance, a sentence to speak or a reply the ModelManager refused or failed: the "
                            "code is the manager's (the error table above), for example `model_failed`",
}
"""The codes a SessionError may carry, for docs/protocol.md."""


async def report_session_error(bus: Bus, sid: str, code: str, message: str, *, seq: int | None = None,
                               msg_id: str | None = None) -> None:
    """Publish a SessionError on ``{p}.ctl.<sid>.error``; a failure to do so is logged, never
    raised, so reporting one session's problem cannot take a service down."""
    log.warning("session %s: %s: %s", sid, code, message)
    event = SessionError(session=sid, ts=time.time(), code=code, message=message, seq=seq)
    try:
        await bus.store(bus.subjects.control(sid, "error"), codec.encode(event),
                             headers={"Nats-Msg-Id": msg_id} if msg_id else None)
    except Exception as exc:
        log.warning("could not publish an error event for %s: %s", sid, exc)
