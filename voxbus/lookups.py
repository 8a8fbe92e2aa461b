"""The last message stored on a subject, read the way a service reads what earlier runs stored
about a session (the STT's last transcript and `transcribed` event, the TTS's start event and
last chunk).

What a service builds on such a read must not be wrong just because the server was briefly
unable to answer: a session taken for new would be transcribed again, or number its speech from
0 again. So a read that gets no answer is retried for a few seconds, and if it still fails the
error is raised (the caller keeps nothing); only "no such message" is an answer.
"""

from __future__ import annotations

import logging

import nats.errors
import stamina
from nats.aio.msg import Msg
from nats.js.errors import NotFoundError, ServiceUnavailableError

from voxbus.bus import Bus

log = logging.getLogger(__name__)

NO_ANSWER = (nats.errors.TimeoutError, nats.errors.NoRespondersError, ServiceUnavailableError, TimeoutError)
RETRY = {"attempts": 6, "timeout": 10.0, "wait_initial": 0.1, "wait_max": 2.0}


def _no_answer(exc: Exception) -> bool:
    if isinstance(exc, NO_ANSWER):
        log.warning("reading a stored message got no answer (%s); retrying", type(exc).__name__)
        return True
    return False


async def last_stored(bus: Bus, stream: str, subject: str) -> Msg | None:
    """The last message `stream` holds on `subject`, None if it holds none; raises what the
    server still answers after the retries (nats errors). A stream that went missing (nobody
    answers a direct get on it) is created again, empty: what it held is gone either way."""
    try:
        async for attempt in stamina.retry_context(on=_no_answer, **RETRY):
            with attempt:
                try:
                    return await bus.js.get_last_msg(stream, subject, direct=True)
                except nats.errors.NoRespondersError:
                    await bus.heal_streams()
                    raise
    except NotFoundError:
        return None
    return None  # (not reached: the last attempt raises)
