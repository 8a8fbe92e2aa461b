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
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError, ServiceUnavailableError

log = logging.getLogger(__name__)

NO_ANSWER = (nats.errors.TimeoutError, nats.errors.NoRespondersError, ServiceUnavailableError, TimeoutError)
RETRY = {"attempts": 6, "timeout": 10.0, "wait_initial": 0.1, "wait_max": 2.0}


def _no_answer(exc: Exception) -> bool:
    if isinstance(exc, NO_ANSWER):
        log.warning("reading a stored message got no answer (%s); retrying", type(exc).__name__)
        return True
    return False


async def last_stored(js: JetStreamContext, stream: str, subject: str) -> Msg | None:
    """The last message `stream` holds on `subject`, None if it holds none; raises what the
    server still answers after the retries (nats errors)."""
    try:
        async for attempt in stamina.retry_context(on=_no_answer, **RETRY):
            with attempt:
                return await js.get_last_msg(stream, subject, direct=True)
    except NotFoundError:
        return None
    return None  # (not reached: the last attempt raises)
