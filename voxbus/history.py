"""Reading what the streams hold about a session, without disturbing anyone.

Each read uses its own ephemeral pull consumer with no acknowledgements: live durable consumers
(the STT service's, say) never see it, and it is deleted when the read ends.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import AsyncIterator

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

log = logging.getLogger(__name__)

BATCH = 1000


def start_at(since: float | None) -> dict:
    """Consumer settings that deliver from `since` (Unix time), or from the stream's start."""
    if since is None:
        return {"deliver_policy": DeliverPolicy.ALL}
    return {"deliver_policy": DeliverPolicy.BY_START_TIME,
            "opt_start_time": datetime.fromtimestamp(since, timezone.utc).isoformat()}


async def stored(js: JetStreamContext, stream: str, subject: str, *, batch: int = BATCH,
                 since: float | None = None) -> AsyncIterator[Msg]:
    """Every message stored on `subject` (wildcards allowed) at the time of the call, oldest first;
    with `since` (Unix time), only those stored from then on."""
    config = ConsumerConfig(ack_policy=AckPolicy.NONE, inactive_threshold=30.0, mem_storage=True,
                            max_ack_pending=-1, **start_at(since))
    sub = await js.pull_subscribe(subject, stream=stream, config=config)
    try:
        info = await sub.consumer_info()
        left = info.num_pending or 0
        while left > 0:
            try:
                msgs = await sub.fetch(min(batch, left), timeout=5.0)
            except NatsTimeout:
                log.warning("reading %s: %d stored messages did not arrive (expired meanwhile?)", subject, left)
                return
            for msg in msgs:
                left -= 1
                yield msg
    finally:
        try:
            name = (await sub.consumer_info()).name
            await sub.unsubscribe()
            if not _restricted(js):  # (with credentials deleting consumers is the operator's: the
                await js.delete_consumer(stream, name)  # server drops the idle reader after 30 s)
        except Exception as exc:  # the server drops idle ephemerals anyway
            log.debug("cleaning up a history reader: %s", exc)


def _restricted(js: JetStreamContext) -> bool:
    """Whether the connection authenticated with credentials (so its role may be limited)."""
    nc = getattr(js, "_nc", None)
    return any(getattr(nc, attr, None) for attr in ("_nkeys_seed", "_nkeys_seed_str", "_user_credentials"))
