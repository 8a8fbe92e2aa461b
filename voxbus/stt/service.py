"""The STT service: consumes every session's audio frames through a durable consumer, cuts
utterances with a streaming VAD, asks the ModelManager to transcribe them (which batches them
across sessions) and publishes one transcript per utterance, with interim ones while it is open.

Delivery callbacks only queue messages; one loop drains them in batches, and a detection task
runs the VAD over every session touched since its last pass in a worker thread, overlapping the
intake. Checking and feeding frames is intake.py's job; a session's transcriptions run in order
in its own task (transcripts.py); partials.py makes the interim ones. A frame is acknowledged
only when nothing needs it any more (session.py); after a crash the consumer resumes at its ack
floor (voxbus/consumers.py) and each session's last stored transcript says where it had got to.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time

import msgspec
from nats.aio.msg import Msg

from voxbus.bus import Bus
from voxbus.client.model_client import ModelClient
from voxbus.service_base import BusService
from voxbus.consumer_floors import KeptConsumer, state_bucket
from voxbus.messages.status import ServiceStatus
from voxbus.stt.cutter import CutterSettings
from voxbus.stt.intake import FrameIntake, SttStats
from voxbus.stt.partition_consumers import PartitionConsumers
from voxbus.stt.partials import PartialMaker
from voxbus.stt.partitions import PartitionOwner
from voxbus.stt.session import Phase, SessionState
from voxbus.stt.transcripts import MODEL_FORMAT, StageHook, TranscriptWriter, ack
from voxbus.stt.vad import SileroVad
from voxbus.stt_work_stream import members_bucket

REORDER_POLL_S = 0.25
"""How often frames waiting after a gap are looked at when no other frame comes."""
LAG_WINDOW = 500
"""Frames the status's lag figures cover: the last ten seconds of one live session, or less of many."""

log = logging.getLogger(__name__)

__all__ = ["MODEL_FORMAT", "SttService", "SttStats"]


class SttService(BusService):
    """``async with SttService(bus) as stt: ...``"""

    service_kind = "stt"

    def __init__(self, bus: Bus, models: ModelClient | None = None, on_stage: StageHook | None = None) -> None:
        """`on_stage(stage, session, **times)`, if given, is told when each step of the path happens
        (for benchmarks: "frame" and "end" at delivery, "detect" per VAD pass, "transcribe" and
        "store" per utterance), so nothing needs to reach into the service's internals."""
        super().__init__()
        self.bus = bus
        self.on_stage = on_stage
        self.js = bus.js
        self.subjects = bus.subjects
        st = self.cfg = bus.config.stt
        self.settings = CutterSettings.from_config(st)
        self.models = models or ModelClient.from_bus(bus)
        self.stats = SttStats()
        self.intake: FrameIntake | None = None
        self.writer: TranscriptWriter | None = None
        self._frames: list[Msg] = []
        self._ends: list[Msg] = []
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._detect_wake = asyncio.Event()
        self._stopping = False
        self._tasks: list[asyncio.Task] = []
        self.partitions: PartitionConsumers | None = None  # stt.partitions > 1: those this process holds
        self.owner: PartitionOwner | None = None
        self.vad: SileroVad | None = None
        self.partials: PartialMaker | None = None

    @property
    def sessions(self) -> dict[str, SessionState]:
        return self.intake.sessions if self.intake is not None else {}

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        self.vad = await asyncio.to_thread(SileroVad)
        self.intake = FrameIntake(self.bus, self.vad, self.settings, self.stats,
                                  min(float(self.cfg.reorder_wait), float(self.cfg.ack_wait) / 3))
        self.writer = TranscriptWriter(self.bus, self.models, self.cfg, self.intake, self.stats, lambda: self._stopping,
                                       self.on_stage)
        self.partials = PartialMaker(self.bus, self.models, self.cfg, self.intake.sessions, self._touch,
                                     lambda: self.writer.in_flight)
        self.writer.early = self.partials.early_reply
        self._tasks = [self._supervised("stt-intake", self._run),
                       self._supervised("stt-detect", self._detector),
                       self._supervised("stt-housekeeping", self._housekeeping)]
        common = {"ack_wait": float(self.cfg.ack_wait), "max_ack_pending": self.cfg.max_ack_pending,
                  "start_new": self.cfg.start == "new"}
        # Discoverable first: a standby waiting for the durable consumer is a process too (`voxbus status`).
        await self._announce(self.bus, "voxbus STT: cuts sessions' audio into utterances and transcribes them")
        kv = await state_bucket(self.bus)
        if self.cfg.partitions > 1:
            await self._start_partitioned(kv, common)
            return
        frames = await KeptConsumer(
            self.bus, kv, stream=self.subjects.stream("audio"), durable=self.subjects.consumer("stt"),
            filter_subject=self.subjects.all_audio_in(), cb=self._on_frame, **common).bind()
        self._subs.append(frames)
        self.intake.replayed_through = lambda: frames.replay_horizon
        self._subs.append(await KeptConsumer(
            self.bus, kv, stream=self.subjects.stream("ctl"), durable=self.subjects.consumer("stt-end"),
            filter_subject=self.subjects.all_control("end"), cb=self._on_end, **common).bind())
        log.info("STT service consuming %s", self.subjects.all_audio_in())

    async def _start_partitioned(self, kv, common: dict) -> None:
        """Take a share of the work stream's partitions, with the other live STT processes."""
        self.partitions = PartitionConsumers(self.bus, kv, self._on_work, common, self._subs, self._forget_partition)
        self.owner = PartitionOwner(
            await members_bucket(self.js, self.subjects, self.bus.config.streams, self.cfg), self._micro.id,
            self.cfg.partitions, float(self.cfg.member_ttl), self.partitions.gain, self.partitions.lose)
        await self.owner.step()  # (the first beat before start returns: a share is being taken)
        self._tasks.append(self._supervised("stt-partitions", self.owner.run))
        self.intake.replayed_through = lambda: max((k.replay_horizon for k in self.partitions.bound.values()), default=0)
        log.info("STT service consuming %s in %d partitions, sharing them with the other STT processes",
                 self.subjects.all_audio_in(), self.cfg.partitions)

    def _forget_partition(self, p: int) -> None:
        """A partition went to another process: drop its sessions and its queued messages here."""
        self._dirty.difference_update(self.intake.release(p))
        self._frames = [m for m in self._frames if self.subjects.stt_work_kind(m.subject)[1] != p]
        self._ends = [m for m in self._ends if self.subjects.stt_work_kind(m.subject)[1] != p]

    async def stop(self, grace: float = 10.0) -> None:
        """Stop taking frames; let transcriptions in flight finish (bounded). Whatever is left
        unacknowledged comes back to the next run (or, partitioned, to the other processes)."""
        self._stopping = True
        if self.partitions is not None:
            await self._end_tasks([t for t in self._tasks if t.get_name() == "stt-partitions"])
            await self.partitions.stop_binding()
        await self._unsubscribe()
        self.partials.forget_all()
        await self._end_tasks([s.worker for s in self.sessions.values()], grace)
        await self._end_tasks(self._tasks)
        if self.owner is not None:
            await self.owner.leave()

    def status(self) -> ServiceStatus:
        lag = sorted(itertools.islice(reversed(self.stats.lag_s), LAG_WINDOW))
        st = self.stats
        return msgspec.structs.replace(
            super().status(), sessions=len(self.sessions),
            pending=sum(k.pending for k in self._subs if isinstance(k, KeptConsumer)),
            lag_ms=round(1000 * lag[len(lag) // 2], 1) if lag else None,
            lag_max_ms=round(1000 * lag[-1], 1) if lag else None,
            counters={"frames": st.frames, "rejected": st.rejected, "gaps": st.gaps, "utterances": st.utterances,
                      "sessions_done": st.sessions_done, "partials": self.partials.published if self.partials else 0,
                      "early_finals": self.partials.early_used if self.partials else 0},
            partitions=sorted(self.partitions.bound) if self.partitions is not None else None,
            standby=self.partitions is None and not any(isinstance(k, KeptConsumer) for k in self._subs))

    async def _on_frame(self, msg: Msg) -> None:
        if self.on_stage is not None:
            self.on_stage("frame", None, at=time.time(), headers=msg.headers)
        self._frames.append(msg)
        self._wake.set()

    async def _on_work(self, msg: Msg) -> None:  # (a partition's consumer carries frames and end events)
        if self.subjects.stt_work_kind(msg.subject)[0] == "end":
            await self._on_end(msg)
        else:
            await self._on_frame(msg)

    async def _on_end(self, msg: Msg) -> None:
        if self.on_stage is not None:
            self.on_stage("end", self.subjects.session_from(msg.subject), at=time.time())
        self._ends.append(msg)
        self._wake.set()

    def _touch(self, sid: str) -> None:
        self._dirty.add(sid)
        self._detect_wake.set()

    async def _run(self) -> None:
        """Frame intake. It never waits for the VAD: a detection pass runs in a worker thread while
        the next frames are decoded and fed, and the pass after it covers every session touched
        meanwhile (on 2 cores this overlap is the difference between 150 and 200+ sessions)."""
        while True:
            if self.intake.waiting:  # frames wait for earlier ones: look again soon, frames or not
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), REORDER_POLL_S)
            else:
                await self._wake.wait()
            self._wake.clear()
            frames, self._frames = self._frames, []
            ends, self._ends = self._ends, []
            for msgs, take in ((frames, self.intake.frame), (ends, self.intake.end)):
                for msg in msgs:
                    try:
                        s = await take(msg)
                    except Exception:  # (a reconnect, a bug): the message is redelivered after ack_wait
                        log.exception("could not take a message on %s", msg.subject)
                        continue
                    if s is not None:
                        self._dirty.add(s.sid)
            if self.intake.waiting:
                try:
                    self._dirty.update(s.sid for s in await self.intake.stop_waiting(time.monotonic()))
                except Exception:
                    log.exception("could not feed frames that waited after a gap")
            if self._dirty:
                self._detect_wake.set()

    async def _detector(self) -> None:
        while True:
            await self._detect_wake.wait()
            self._detect_wake.clear()
            dirty, self._dirty = self._dirty, set()
            sessions = [self.sessions[sid] for sid in dirty if sid in self.sessions]
            if sessions:
                started = time.perf_counter()
                try:
                    await self._detect(sessions)
                except Exception:
                    log.exception("speech detection failed")
                if self.on_stage is not None:
                    self.on_stage("detect", None, seconds=time.perf_counter() - started, sessions=len(sessions))

    # -- speech detection and utterances ----------------------------------------------------------
    async def _detect(self, sessions: list[SessionState]) -> None:
        finals = [s.complete and s.phase < Phase.FLUSHED for s in sessions]
        work = [(s, final, *s.vad_input(final)) for s, final in zip(sessions, finals)]
        try:
            probs = await asyncio.to_thread(
                lambda: [s.vad.probabilities(audio) if len(audio) else audio for s, _, _, audio in work])
        except Exception:
            self._dirty.update(s.sid for s in sessions)  # housekeeping wakes the next pass
            raise
        for (s, final, position, _), p in zip(work, probs):
            if s.released:  # its partition moved while the pass ran
                continue
            try:
                cuts = s.apply(position, p, final)
                if final:
                    s.advance(Phase.FLUSHED)
                s.pending.extend(s.to_utterances(cuts))
                self.writer.start(s)
                self.partials.consider(s)
                await ack(s.settled())
                await self.writer.finish_if_done(s)
            except Exception:  # this session's problem only; a later pass tries it again
                log.exception("session %s: speech detection failed", s.sid)
                self._dirty.add(s.sid)  # (the final window's padding is not added twice: vad_input)

    # -- keeping held frames ours, finishing idle sessions ------------------------------------------
    async def _housekeeping(self) -> None:
        period = max(min(float(self.cfg.ack_wait) / 3, 5.0), 0.2)
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for s in list(self.sessions.values()):
                try:
                    await self._keep(s, now)
                except Exception:  # a reconnect, say: the next period tries again
                    log.exception("session %s: housekeeping failed", s.sid)
            if self._dirty:  # sessions a failed detection pass left, even when no frame comes to wake it
                self._detect_wake.set()
            await self._check_consumers()  # where each got to; bound again if someone deleted it

    async def _keep(self, s: SessionState, now: float) -> None:
        if s.duplicates is not None:  # copies still coming in a run are reported once it has stopped
            await self.intake.reports.flush_duplicates(s)
        for f in s.stale(now - float(self.cfg.ack_wait) / 2):
            await f.msg.in_progress()
            f.touched = now
        if s.end_msg is not None:
            await s.end_msg.in_progress()
        if now - s.last_heard <= float(self.cfg.session_idle):
            return
        if s.transcribed_at is not None and not (s.held or s.pending):
            self.sessions.pop(s.sid, None)  # transcribed before (frames of it seen again): never twice
            return
        if s.phase is Phase.OPEN:
            if not (s.held or s.pending or s.max_seq >= 0):
                self.sessions.pop(s.sid, None)
                return
            log.info("session %s idle for %.0fs: finishing it", s.sid, now - s.last_heard)
            s.advance(Phase.ENDED)
        elif s.phase is Phase.ENDED and not s.complete:
            log.info("session %s: frames its end named missing for %.0fs: finishing without them", s.sid,
                     now - s.last_heard)
            await self.intake.reports.give_up_missing(s)
        elif s.phase is Phase.FLUSHED:
            await self.writer.finish_if_done(s)  # an earlier try failed
            return
        else:
            return
        s.last_heard = now
        self._dirty.add(s.sid)
        self._detect_wake.set()
