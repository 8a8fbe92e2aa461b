"""Frames the stream holds whose delivery never reached this service.

On a cluster, a node that stops while it passes a delivery on loses that message in transit. The
consumer counts it as delivered and sends it again only after `stt.ack_wait`, long after
`stt.reorder_wait` has given up on the gap. So before a gap is reported, the stream is asked for
the missing frames (direct gets, next by subject, from the last frame taken): those it holds are
fed from the stored copy, and the consumer's redelivery, when it comes, takes over the
acknowledgement (see FrameIntake.frame).
"""

from __future__ import annotations

import datetime
import logging

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from voxbus.errors import ProtocolError
from voxbus.messages import codec
from voxbus.messages.audio import AudioFrame

log = logging.getLogger(__name__)


class StoredCopy:
    """A frame read from the stream, standing in for its lost delivery: it carries the same stream
    sequence and storage time, and acknowledging it does nothing (there is no delivery to ack)."""

    def __init__(self, stream: str, subject: str, seq: int, data: bytes, headers: dict | None,
                 stored: datetime.datetime | None) -> None:
        self.subject, self.data, self.headers = subject, data, headers
        self.metadata = Msg.Metadata(sequence=Msg.Metadata.SequencePair(consumer=0, stream=seq), num_pending=0,
                                     num_delivered=1, timestamp=stored or datetime.datetime.now(datetime.timezone.utc),
                                     stream=stream, consumer="")

    async def ack(self) -> None:
        pass

    async def in_progress(self) -> None:
        pass

    async def nak(self, delay: float | None = None) -> None:
        pass

    async def term(self) -> None:
        pass


def is_stored_copy(msg) -> bool:
    return isinstance(msg, StoredCopy)


async def find_stored(js: JetStreamContext, stream: str, subject: str, after: int, wanted: set[int],
                      budget: int) -> dict[int, tuple[StoredCopy, AudioFrame]]:
    """The frames with a `seq` in `wanted` that `stream` holds on `subject` past stream sequence
    `after`, reading at most `budget` of the subject's messages."""
    found: dict[int, tuple[StoredCopy, AudioFrame]] = {}
    at = after + 1
    for _ in range(budget):
        try:
            raw = await js.get_msg(stream, seq=at, subject=subject, direct=True, next=True)
        except NotFoundError:
            break
        try:
            head = codec.decode_meta(raw.headers, AudioFrame)
        except ProtocolError:
            head = None
        if head is not None and head.seq in wanted and head.seq not in found:
            found[head.seq] = (StoredCopy(stream, subject, raw.seq, raw.data, raw.headers, raw.time), head)
            if len(found) == len(wanted):
                break
        at = raw.seq + 1
    if found:
        log.info("%s: frames %s were stored but their delivery was lost; read from the stream", subject,
                 sorted(found))
    return found
