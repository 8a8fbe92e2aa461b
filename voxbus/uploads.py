"""Audio too large for one NATS message travels through a JetStream Object Store bucket
(`<PREFIX>_UPLOADS`, created with the streams; objects expire after `streams.uploads.max_age`).

The sender owns the object: it puts the PCM there, names it in its request, keeps it while the
call (with every retry) goes on, and deletes it when the call ends. A receiver only reads, so a
retry after a worker crash or a manager restart finds the audio still there, and any manager on
the cluster can serve it. A sender that dies leaves an object that expires."""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator

from nats.aio.client import Client
from nats.js.errors import BucketNotFoundError, NotFoundError, ObjectNotFoundError

from voxbus.errors import BadRequest, PayloadTooLarge

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def uploaded(nc: Client, bucket: str, data: bytes) -> AsyncIterator[str]:
    """Put `data` in the bucket under a new name for as long as the block runs."""
    try:
        store = await nc.jetstream().object_store(bucket)
    except BucketNotFoundError:
        raise PayloadTooLarge(f"{len(data)} bytes of audio do not fit one message on this server, and its uploads "
                              f"bucket {bucket} does not exist (voxbus creates it with the streams)") from None
    name = f"utt-{uuid.uuid4().hex}"
    await store.put(name, data)
    try:
        yield name
    finally:
        try:
            await store.delete(name)
        except (ObjectNotFoundError, NotFoundError):
            pass
        except Exception as exc:  # it expires anyway
            log.warning("could not delete upload %s: %s", name, exc)


async def read(nc: Client, bucket: str, name: str, limit: int) -> bytes:
    """The object's bytes; refused when it is over `limit` bytes."""
    try:
        store = await nc.jetstream().object_store(bucket)
    except BucketNotFoundError:
        raise BadRequest(f"no uploaded audio named {name!r}: this server has no uploads bucket {bucket} "
                         f"(voxbus creates it with the streams)") from None
    try:
        info = await store.get_info(name)
        if info.size > limit:
            raise PayloadTooLarge(f"uploaded audio {name!r} is {info.size} bytes; this manager takes at most "
                                  f"{limit} (manager.max_request_bytes)")
        return (await store.get(name)).data
    except (ObjectNotFoundError, NotFoundError):
        raise BadRequest(f"no uploaded audio named {name!r} in {bucket} (expired, or its sender "
                         f"deleted it)") from None
