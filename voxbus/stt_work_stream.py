"""The STT work stream: AUDIO's frames and CTL's end events again, each under its session's partition.

With `stt.partitions` > 1 the STT processes share the sessions: one durable consumer per
partition, each held by one process at a time (partitions.py). A consumer can only filter on
subjects, so the partition must be in the subject. Rather than change the subjects AUDIO stores
(which every reader, replay, permission and client in another language names), a stream of its
own sources AUDIO and CTL through NATS subject transforms that add `{{partition(N,1)}}` of the
session id. nats-server does the copying; the stored sessions, their replays and the clients stay
exactly as they are, and `stt.partitions: 1` (the default) has no work stream and costs nothing.
The price: while partitioned, the audio is stored twice (the work stream has AUDIO's limits).
"""

from __future__ import annotations

import logging

from nats.js import JetStreamContext
from nats.js.api import (DiscardPolicy, KeyValueConfig, RetentionPolicy, StorageType, StreamConfig, StreamSource,
                         SubjectTransform)
from nats.js.errors import BucketNotFoundError, NotFoundError

from voxbus.config.schema import SttConfig
from voxbus.config.stream_limits import StreamsConfig
from voxbus.subjects import Subjects

log = logging.getLogger(__name__)

MEMBERS_BUCKET_BYTES = 1 << 20


def work_stream_config(subjects: Subjects, streams: StreamsConfig, partitions: int,
                       since: dict[str, int] | None) -> StreamConfig:
    """The work stream; a new one copies each stream from the sequence `since` names (AUDIO may
    hold a day of sessions that were transcribed long ago)."""
    audio = streams.audio
    return StreamConfig(
        name=subjects.stt_work_stream(),
        description=f"voxbus: frames and end events for {partitions} STT partitions",
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE if audio.storage == "file" else StorageType.MEMORY,
        max_age=float(audio.max_age), max_bytes=streams.max_bytes("audio"), discard=DiscardPolicy.OLD,
        num_replicas=streams.replicas_of("audio"), allow_direct=True,
        sources=[StreamSource(name=subjects.stream(family), opt_start_seq=(since or {}).get(family),
                              subject_transforms=[SubjectTransform(src=src, dest=dest)])
                 for family, src, dest in subjects.stt_work_sources(partitions)],
    )


def partitions_of(config: StreamConfig) -> int | None:
    """The partition count an existing work stream was made for (from its transform)."""
    for source in config.sources or []:
        for tr in source.subject_transforms or []:
            if "partition(" in tr.dest:
                return int(tr.dest.split("partition(", 1)[1].split(",", 1)[0])
    return None


async def ensure_work_stream(js: JetStreamContext, subjects: Subjects, streams: StreamsConfig, stt: SttConfig) -> None:
    """Create the work stream and the members bucket when `stt.partitions` > 1. An existing work
    stream keeps where its sources had got to; one made for another partition count is changed
    (messages already copied keep their old partition: change the count only when idle). A
    process configured with 1 partition leaves an existing one alone."""
    if stt.partitions <= 1:
        return
    name = subjects.stt_work_stream()
    try:
        info = await js.stream_info(name)
    except NotFoundError:
        since = {family: (await js.stream_info(subjects.stream(family))).state.last_seq + 1
                 for family, _, _ in subjects.stt_work_sources(stt.partitions)}
        await js.add_stream(work_stream_config(subjects, streams, stt.partitions, since))
        log.info("created stream %s: %d STT partitions", name, stt.partitions)
    else:
        had = partitions_of(info.config)
        if had != stt.partitions:
            starts = {s.name: s.opt_start_seq for s in info.config.sources or []}
            config = work_stream_config(subjects, streams, stt.partitions, None)
            for source in config.sources:
                source.opt_start_seq = starts.get(source.name)
            await js.update_stream(config)
            log.warning("stream %s: STT partitions changed from %s to %d; frames copied before keep their old "
                        "partition", name, had, stt.partitions)
    await members_bucket(js, subjects, streams, stt)


async def members_bucket(js: JetStreamContext, subjects: Subjects, streams: StreamsConfig, stt: SttConfig):
    bucket = subjects.stt_members_bucket()
    try:
        return await js.key_value(bucket)
    except BucketNotFoundError:
        return await js.create_key_value(KeyValueConfig(
            bucket=bucket, history=1, ttl=float(stt.member_ttl), storage=StorageType.MEMORY,
            replicas=streams.replicas, max_bytes=MEMBERS_BUCKET_BYTES,
            description="voxbus: the live STT processes (keys expire unless refreshed)"))
