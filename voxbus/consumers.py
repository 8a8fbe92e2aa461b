"""Binding a service's durable push consumer so a restart resumes *in stream order* (the STT,
TTS and assistant services all bind theirs this way).

JetStream redelivers a dead consumer's unacknowledged messages only when their ack wait runs
out, after messages published since: a restarted service would see a session's later frames
before its earlier ones, which a streaming VAD cannot take. So at start the durable is recreated
from its ack floor (the first message not yet acknowledged): everything from there comes again,
in order. Messages acknowledged above the floor come again too; the service recognises them
(for the STT: frames covered by stored transcripts, sessions already transcribed) and only
acknowledges them.
"""

from __future__ import annotations

import logging
from typing import Awaitable, Callable

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

log = logging.getLogger(__name__)

IDLE_HEARTBEAT_S = 5.0


async def bind_resuming(js: JetStreamContext, *, stream: str, durable: str, filter_subject: str,
                        cb: Callable[[Msg], Awaitable[None]], ack_wait: float, max_ack_pending: int,
                        start_new: bool, recorded_floor: int | None = None):
    """Push-subscribe `durable` on `stream`, resuming at its ack floor (see the module doc); a
    consumer that is gone resumes at `recorded_floor` (a stream sequence) when one is known."""
    deliver = DeliverPolicy.NEW if start_new else DeliverPolicy.ALL
    start_seq = None
    try:
        info = await js.consumer_info(stream, durable)
    except NotFoundError:
        info = None
    if info is None and recorded_floor is not None:
        start_seq, deliver = recorded_floor, DeliverPolicy.BY_START_SEQUENCE
        log.warning("%s: consumer %s is gone; creating it again at stream sequence %d, where it had got to",
                    stream, durable, start_seq)
    if info is not None:
        # The server starts a new consumer's ack floor just before its first message, so the
        # floor is meaningful even when nothing has been acknowledged yet.
        floor = info.ack_floor.stream_seq if info.ack_floor and info.ack_floor.stream_seq else 0
        start_seq, deliver = floor + 1, DeliverPolicy.BY_START_SEQUENCE
        log.info("%s: resuming %s from stream sequence %d (%d unacknowledged)", stream, durable,
                 start_seq, info.num_ack_pending or 0)
        await js.delete_consumer(stream, durable)
    config = ConsumerConfig(
        durable_name=durable, ack_policy=AckPolicy.EXPLICIT, ack_wait=ack_wait,
        max_ack_pending=max_ack_pending, filter_subject=filter_subject, deliver_policy=deliver,
        opt_start_seq=start_seq, max_deliver=-1,
    )
    return await js.subscribe(
        filter_subject, durable=durable, stream=stream, cb=cb, manual_ack=True, config=config,
        flow_control=True, idle_heartbeat=IDLE_HEARTBEAT_S,
        pending_msgs_limit=max(max_ack_pending, 65536), pending_bytes_limit=1 << 30,
    )
