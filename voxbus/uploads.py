"""Audio too large for one NATS message travels through a JetStream Object Store bucket
(`<PREFIX>_UPLOADS`, created with the streams; objects expire after `streams.uploads.max_age`).
The sender puts the PCM there and names the object in its request; the receiver takes it, which
also deletes it. Any process on the cluster can take it, so this works with several managers."""

from __future__ import annotations

import logging

from nats.aio.client import Client
from nats.js.errors import BucketNotFoundError, NotFoundError, ObjectNotFoundError

from voxbus.errors import BadRequest, PayloadTooLarge

log = logging.getLogger(__name__)


async def _store(nc: Client, bucket: str, size: int):
    try:
        return await nc.jetstream().object_store(bucket)
    except BucketNotFoundError:
        raise PayloadTooLarge(f"{size} bytes of audio do not fit one message on this server, and its uploads "
                              f"bucket {bucket} does not exist (voxbus creates it with the streams)") from None


async def put(nc: Client, bucket: str, name: str, data: bytes) -> None:
    await (await _store(nc, bucket, len(data))).put(name, data)


async def take(nc: Client, bucket: str, name: str, limit: int) -> bytes:
    """The object's bytes, then the object is deleted; refused when it is over `limit` bytes."""
    store = await _store(nc, bucket, 0)
    try:
        info = await store.get_info(name)
        if info.size > limit:
            raise PayloadTooLarge(f"uploaded audio {name!r} is {info.size} bytes; this manager takes at most "
                                  f"{limit} (manager.max_request_bytes)")
        return (await store.get(name)).data
    except (ObjectNotFoundError, NotFoundError):
        raise BadRequest(f"no uploaded audio named {name!r} in {bucket} (expired, or already taken)") from None
    finally:
        try:
            await store.delete(name)
        except (ObjectNotFoundError, NotFoundError):
            pass
        except Exception as exc:  # it expires anyway
            log.warning("could not delete upload %s: %s", name, exc)
