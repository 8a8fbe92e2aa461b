"""JetStream stream definitions: limits retention, file storage, sizes and ages from config.
Created idempotently: an existing stream is updated to the configured limits."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Awaitable, Callable

import nats.errors

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, ObjectStoreConfig, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import APIError, BucketNotFoundError, NotFoundError, ServiceUnavailableError

from voxbus.config.schema import StreamsConfig, SttConfig
from voxbus.errors import ConfigError
from voxbus.stt_work_stream import ensure_work_stream
from voxbus.subjects import STREAM_FAMILIES, Subjects

log = logging.getLogger(__name__)

DUPLICATE_WINDOW_S = 120.0
"""How long Nats-Msg-Id dedupe remembers an id: longer than any service restart we retry over."""


def stream_configs(subjects: Subjects, streams: StreamsConfig) -> list[StreamConfig]:
    configs = []
    for family in STREAM_FAMILIES:
        limits = getattr(streams, family)
        configs.append(StreamConfig(
            name=subjects.stream(family),
            subjects=subjects.stream_subjects(family),
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE if limits.storage == "file" else StorageType.MEMORY,
            max_age=float(limits.max_age),
            max_bytes=streams.max_bytes(family),
            num_replicas=streams.replicas_of(family),
            discard=DiscardPolicy.NEW if limits.discard == "new" else DiscardPolicy.OLD,
            duplicate_window=min(DUPLICATE_WINDOW_S, float(limits.max_age)) if limits.max_age else DUPLICATE_WINDOW_S,
            allow_direct=True,
        ))
    return configs


NO_STORAGE = 10047
"""JetStream's error code when a stream's max_bytes cannot be reserved within the server's limits."""


async def ensure_streams(js: JetStreamContext, subjects: Subjects, streams: StreamsConfig,
                         stt: SttConfig | None = None) -> list[str]:
    """Create or update every voxbus stream (and the STT work stream when `stt.partitions` > 1);
    returns their names."""
    names = []
    try:
        for sc in stream_configs(subjects, streams):
            await _while_electing(lambda sc=sc: _create_or_update(js, sc))
            names.append(sc.name)
        await _while_electing(lambda: ensure_upload_bucket(js, subjects, streams))
        if stt is not None and stt.partitions > 1:
            await _while_electing(lambda: ensure_work_stream(js, subjects, streams, stt))
    except APIError as exc:
        if exc.err_code != NO_STORAGE:
            raise
        total = sum(streams.max_bytes(f) for f in (*STREAM_FAMILIES, "uploads"))
        if stt is not None and stt.partitions > 1:
            total += streams.max_bytes("audio")  # the STT work stream
        raise ConfigError(
            f"the NATS server has no room left to reserve the {subjects.prefix!r} streams: each voxbus prefix "
            f"reserves {total / 2**30:.1f} GiB (streams.*.max_bytes, streams.audio_hold), and other streams hold the rest of the "
            f"server's JetStream limit (max_file_store / max_memory_store); lower streams.*.max_bytes or raise "
            f"the server's limit") from None
    return names


async def _create_or_update(js: JetStreamContext, sc: StreamConfig) -> None:
    try:
        info = await js.stream_info(sc.name)
    except NotFoundError:
        await js.add_stream(sc)
        log.info("created stream %s (%s, %d replica%s)", sc.name, ", ".join(sc.subjects or []), sc.num_replicas,
                 "" if sc.num_replicas == 1 else "s")
    else:
        await js.update_stream(dataclasses.replace(sc, num_replicas=kept_replicas(info.config, sc)))


def kept_replicas(existing: StreamConfig, wanted: StreamConfig) -> int:
    """Replicas are only ever raised here: a client started with the default config (1) must not
    strip a cluster's streams of their copies. Lowering them is the operator's act (`nats stream edit`)."""
    have, want = existing.num_replicas or 1, wanted.num_replicas or 1
    if have > want:
        log.debug("stream %s keeps its %d replicas (this process's config says %d)", wanted.name, have, want)
    return max(have, want)


ELECTION_WAIT_S = 30.0
"""How long a cluster that is just starting may take to elect its JetStream meta leader."""


STARTING = {10008, 10023}
"""503s of a cluster still forming: JetStream temporarily unavailable (no meta leader), and
insufficient resources (too few peers known yet to place the replicas)."""


async def _while_electing(op: Callable[[], Awaitable[None]]) -> None:
    """Run op; while a new cluster has no JetStream leader yet (no answer, or one of the 503s of
    STARTING), try again for a bounded time. A single server answers the first time."""
    deadline = time.monotonic() + ELECTION_WAIT_S
    while True:
        try:
            return await op()
        except (ServiceUnavailableError, nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
            if isinstance(exc, ServiceUnavailableError) and exc.err_code not in STARTING:
                raise
            if time.monotonic() > deadline:
                raise ConfigError(f"JetStream is not available on this NATS deployment ({exc!r}); on a cluster, "
                                  "check that enough nodes are up to elect a leader") from None
            log.info("JetStream not ready yet (%s); trying again", type(exc).__name__)
            await asyncio.sleep(0.5)


async def ensure_upload_bucket(js: JetStreamContext, subjects: Subjects, streams: StreamsConfig) -> None:
    """The Object Store for audio larger than one message: objects expire after `max_age`. An
    existing bucket is updated to the configured age, size and replicas (its storage is fixed)."""
    bucket, limits = subjects.upload_bucket(), streams.uploads
    try:
        await js.object_store(bucket)
        info = await js.stream_info(f"OBJ_{bucket}")  # the stream behind the bucket
        want = {"max_age": float(limits.max_age), "max_bytes": int(limits.max_bytes),
                "num_replicas": max(info.config.num_replicas or 1, streams.replicas_of("uploads"))}
        if any(getattr(info.config, k) != v for k, v in want.items()):
            dupes = info.config.duplicate_window  # may not exceed max_age (0: no age limit)
            if want["max_age"]:
                dupes = min(dupes or want["max_age"], want["max_age"])
            await js.update_stream(dataclasses.replace(info.config, duplicate_window=dupes, **want))
            log.info("updated object store %s to %s", bucket, want)
    except BucketNotFoundError:
        await js.create_object_store(bucket, ObjectStoreConfig(
            description="voxbus: audio too large for one message, until it is transcribed",
            ttl=float(limits.max_age), max_bytes=int(limits.max_bytes), replicas=streams.replicas_of("uploads"),
            storage=StorageType.FILE if limits.storage == "file" else StorageType.MEMORY))
        log.info("created object store %s", bucket)
