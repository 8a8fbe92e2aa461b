"""The STT service's intake: every session in flight, what earlier runs stored about it, and each
delivered frame or end event checked and fed to its session.

A frame is taken in `seq` order. One covered by a stored transcript (a run resuming after a crash
sees it again), or a second copy of one already taken, is acknowledged and dropped (a copy a
client stored twice is reported); frames missing between two received are reported and replaced
by silence; a frame after the session's end, or under the id of a session already transcribed,
is reported and dropped (the reports: frame_reports.py). Bad input is its
session's problem only: an error event on that session, never an exception here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from voxbus.bus import Bus
from voxbus.errors import InvalidAudio, ProtocolError
from voxbus.lookups import last_stored
from voxbus.messages import codec
from voxbus.messages.audio import AudioFrame
from voxbus.messages.control import SessionEnd, SessionTranscribed
from voxbus.messages.text import Transcript
from voxbus.stt.cutter import CutterSettings
from voxbus.stt.frame_reports import FrameReports, frame_seconds, stored_at, stream_seq
from voxbus.stt.session import Phase, SessionState
from voxbus.stt.stored_frames import find_stored, is_stored_copy
from voxbus.stt.vad import SileroVad
from voxbus.subjects import InvalidSessionId, validate_session_id

log = logging.getLogger(__name__)

MAX_EARLY = 2000
"""Frames of one session kept waiting after a gap (40 s of 20 ms frames); past that, at once."""


@dataclass
class SttStats:
    frames: int = 0
    rejected: int = 0
    gaps: int = 0
    utterances: int = 0
    sessions_done: int = 0
    lag_s: deque = field(default_factory=lambda: deque(maxlen=20000))
    """Wall time from a frame's capture timestamp (AudioFrame.ts) to the service processing it."""


class FrameIntake:
    def __init__(self, bus: Bus, vad: SileroVad, settings: CutterSettings, stats: SttStats,
                 reorder_wait: float = 0.0) -> None:
        self.bus = bus
        self.reorder_wait = reorder_wait
        self.waiting: set[str] = set()  # sessions with frames waiting for earlier ones
        self.js: JetStreamContext = bus.js
        self.subjects = bus.subjects
        self.vad = vad
        self.settings = settings
        self.stats = stats
        self.sessions: dict[str, SessionState] = {}
        self.reports = FrameReports(bus, stats)
        self.replayed_through: Callable[[], int] = lambda: 0
        """The AUDIO stream sequence up to which its consumer, bound again after someone deleted
        it, delivers frames this run may have taken before (not a client's second copy)."""

    async def session(self, sid: str) -> SessionState:
        """The session in flight under `sid`, or a new one that knows what earlier runs stored.
        It is kept only once that is known: if the stream cannot say, this raises and the frame
        stays unacknowledged (redelivered), rather than the session being taken for new."""
        s = self.sessions.get(sid)
        if s is None:
            s = SessionState(sid, self.vad.stream(), self.settings)
            await self._recall(s)
            s = self.sessions.setdefault(sid, s)
        return s

    async def _recall(self, s: SessionState) -> None:
        """Its last stored transcript and whether it was finished: two direct gets."""
        raw = await last_stored(self.bus, self.subjects.stream("text"), self.subjects.transcript(s.sid))
        if raw is not None:
            try:
                last = codec.decode(raw.data, Transcript)
                s.next_utterance, s.skip_through = last.utterance + 1, last.last_seq
            except ProtocolError:
                pass
        raw = await last_stored(self.bus, self.subjects.stream("ctl"), self.subjects.control(s.sid, "transcribed"))
        if raw is not None:
            try:
                done = codec.decode(raw.data, SessionTranscribed)
            except ProtocolError:
                return
            s.transcribed_seq = done.last_seq if done.last_seq is not None else -1
            s.transcribed_at = raw.time.timestamp() if raw.time else done.ts
            s.skip_through = max(s.skip_through, s.transcribed_seq)

    def _partition(self, msg: Msg) -> int:
        """The work stream partition a session's messages come in; -1 when not partitioned."""
        p = self.subjects.stt_work_kind(msg.subject)[1]
        return -1 if p is None else p

    # -- frames -------------------------------------------------------------------------------
    async def frame(self, msg: Msg) -> SessionState | None:
        """Check and feed one delivered frame; its session if the frame was taken."""
        try:
            sid = validate_session_id(self.subjects.session_from(msg.subject))
        except (InvalidSessionId, ValueError) as exc:
            log.warning("dropping a frame on %s: %s", msg.subject, exc)
            await msg.term()
            return None
        s = await self.session(sid)
        if s.partition is None:
            s.partition = self._partition(msg)
        try:
            head = codec.decode_meta(msg.headers, AudioFrame)
        except ProtocolError as exc:
            await self.reports.reject(s, msg, "bad_header", str(exc), None)
            return None
        late = s.late_reason(head.seq, lambda: stored_at(msg))
        if late:
            await self.reports.reject(s, msg, "after_end", late, head.seq)
            return None
        s.max_seq = max(s.max_seq, head.seq)  # even for frames skipped or rejected: the end waits for it
        if head.seq <= s.skip_through or s.phase >= Phase.FLUSHED:
            await msg.ack()  # covered by a stored transcript (a resumed run sees it again), or too late:
            return None  # the session was finished without it (give_up_missing)
        if head.seq <= s.fed_seq:
            held = next((f for f in reversed(s.held) if f.seq == head.seq), None)
            if held is not None and stream_seq(held.msg) == stream_seq(msg):
                if is_stored_copy(held.msg):
                    held.msg = msg  # the lost delivery, come at last: acknowledging it is now possible
                return None  # a redelivery of a frame still held: the held one will be acknowledged
            await msg.ack()  # a second copy of a frame already taken
            if self._sent_twice(s, head.seq, msg):
                await self.reports.duplicate(s, head.seq, msg)
            return None
        if s.fed_seq < 0 and not s.start_checked and head.seq > s.skip_through + 1:
            s.start_checked = True
            s.start_pending = await self._none_stored_before(s, head)
        expected = s.fed_seq + 1 if s.fed_seq >= 0 else s.skip_through + 1
        if ((s.fed_seq >= 0 or s.start_pending) and head.seq > expected and self.reorder_wait > 0
                and len(s.early) < MAX_EARLY):
            waiting = s.early.get(head.seq)
            if waiting is not None:  # a redelivery of one waiting (the first is kept), or a copy
                if is_stored_copy(waiting[0]) and stream_seq(waiting[0]) == stream_seq(msg):
                    s.early[head.seq] = (msg, head)
                elif stream_seq(waiting[0]) != stream_seq(msg):
                    await msg.ack()
                    if self._sent_twice(s, head.seq, msg):
                        await self.reports.duplicate(s, head.seq, msg)
                return None
            s.early[head.seq] = (msg, head)
            if s.early_since is None:
                s.early_since = time.monotonic()
                self.waiting.add(s.sid)
            return None
        return await self._take(s, msg, head)

    async def _take(self, s: SessionState, msg: Msg, head: AudioFrame) -> SessionState:
        """Feed a frame (after reporting the gap before it, if any), then the frames that waited
        for it, in order."""
        while True:
            if s.fed_seq >= 0 and head.seq > s.fed_seq + 1:
                await self.reports.gap(s, msg, head)
            elif s.start_pending and head.seq > s.skip_through + 1:
                await self.reports.never_read(s, head.seq)
            if s.duplicates is not None:
                await self.reports.flush_duplicates(s)
            s.start_pending = False
            try:
                s.feed(msg.data, head.format, head.seq, head.offset, msg)
                s.last_fed = msg
                self.stats.frames += 1
                if head.ts > 0:
                    self.stats.lag_s.append(time.time() - head.ts)
            except InvalidAudio as exc:
                s.skip(head.seq, frame_seconds(msg.data, head))
                await self.reports.reject(s, msg, "invalid_audio", exc.message, head.seq)
            if s.fed_seq + 1 not in s.early:
                break
            msg, head = s.early.pop(s.fed_seq + 1)
        if not s.early:
            s.early_since = None
            self.waiting.discard(s.sid)
        return s

    async def stop_waiting(self, now: float) -> list[SessionState]:
        """Sessions whose frames after a gap waited `stt.reorder_wait` in vain: report the gap,
        feed what came. The sessions fed."""
        fed = []
        for sid in list(self.waiting):
            s = self.sessions.get(sid)
            if s is None or not s.early:
                self.waiting.discard(sid)
                continue
            if s.early_since is not None and now - s.early_since >= self.reorder_wait:
                await self._recover_stored(s)  # frames of the gap the stream holds are fed, not reported
                seq = min(s.early)
                msg, head = s.early.pop(seq)
                s.early_since = now if s.early else None  # frames after a further gap wait anew
                fed.append(await self._take(s, msg, head))
        return fed

    async def _recover_stored(self, s: SessionState) -> None:
        """Before a gap is reported: the frames of it the stream holds (their delivery was lost in
        transit, stored_frames.py) join the waiting ones."""
        expected = s.fed_seq + 1 if s.fed_seq >= 0 else s.skip_through + 1
        wanted = set(range(expected, min(s.early)))
        if not wanted or len(wanted) > MAX_EARLY:
            return
        ref = s.early[min(s.early)][0]  # a frame of the session from the same stream and consumer
        after = stream_seq(s.last_fed) if s.last_fed is not None else 0
        try:
            found = await find_stored(self.js, ref.metadata.stream, ref.subject, after, wanted,
                                      budget=len(s.early) + len(wanted) + 16)
        except (nats.errors.Error, asyncio.TimeoutError) as exc:  # the gap is reported as before
            log.warning("session %s: could not look for frames %d-%d in the stream: %r", s.sid, expected,
                        max(wanted), exc)
            return
        for seq, (copy, head) in found.items():
            s.early[seq] = (copy, head)
            s.recovered.add(stream_seq(copy))

    def _sent_twice(self, s: SessionState, seq: int, msg: Msg) -> bool:
        """Whether a frame whose seq was taken already is a client's second copy, stored as a
        message of its own, rather than a redelivery, a replay by a consumer bound again, or a
        frame that came after its gap was reported. (Rare: the metadata is parsed only here.)"""
        md = msg.metadata
        if md.num_delivered > 1 or md.sequence.stream <= self.replayed_through() or md.sequence.stream in s.recovered:
            return False
        return not any(first <= seq <= last for first, last in s.gaps)

    async def _none_stored_before(self, s: SessionState, head: AudioFrame) -> bool:
        """The first frame this run reads of a session is not its first: were the ones before it
        stored and taken (a run resuming mid-session), or are they not in the stream? The
        stream's oldest frame of the session says. If that is this one, they are still to come
        (a publisher resending after a broker restart: they wait like frames after a gap), or the
        stream's limits dropped them before the service read them, or they were never sent."""
        try:
            raw = await self.js.get_msg(self.subjects.stream("audio"), seq=1, subject=self.subjects.audio_in(s.sid),
                                        direct=True, next=True)
            return codec.decode_meta(raw.headers, AudioFrame).seq == head.seq
        except (NotFoundError, ProtocolError):
            return False

    def release(self, partition: int) -> list[str]:
        """Forget the sessions of a partition another process now holds, publishing nothing more
        of them (their frames not acknowledged come to it). Their ids."""
        gone = [sid for sid, s in self.sessions.items() if s.partition == partition]
        for sid in gone:
            s = self.sessions.pop(sid)
            s.released = True
            if s.worker is not None:
                s.worker.cancel()
            self.waiting.discard(sid)
        return gone

    # -- end events -----------------------------------------------------------------------------
    async def end(self, msg: Msg) -> SessionState | None:
        try:
            end = codec.decode(msg.data, SessionEnd)
            sid = validate_session_id(self.subjects.session_from(msg.subject))
        except (ProtocolError, InvalidSessionId, ValueError) as exc:
            log.warning("dropping a malformed end event on %s: %s", msg.subject, exc)
            await msg.term()
            return None
        s = await self.session(sid)
        if s.partition is None:
            s.partition = self._partition(msg)
        if s.transcribed_at is not None or (end.last_seq is not None and end.last_seq <= s.transcribed_seq):
            if s.transcribed_at is not None and stored_at(msg) > s.transcribed_at and (
                    end.last_seq is None or end.last_seq > s.transcribed_seq):
                await self.reports.report(s, "after_end", f"an end event arrived after session {sid} was transcribed; a "
                                  f"session id is used once", end.last_seq, f"{sid}:error:{msg.metadata.sequence.stream}")
            await msg.ack()  # (otherwise: the end of a session an earlier run finished, seen again)
            if not s.held and not s.pending:
                self.sessions.pop(sid, None)
            return None
        if s.end_msg is not None or s.phase >= Phase.FLUSHED:  # ended already (or finished for idleness)
            first = s.end_seq if s.end_msg is not None else s.max_seq
            if end.last_seq is not None and (first is None or end.last_seq > first):
                await self.reports.report(s, "after_end", f"a second end event names frames up to {end.last_seq}, beyond "
                                  f"the session's end ({'last_seq ' + str(first) if first is not None else 'no last_seq'}"
                                  f"); the first end stands", end.last_seq, f"{sid}:error:{msg.metadata.sequence.stream}")
            await msg.ack()
            return None
        s.end_seq, s.end_msg = end.last_seq, msg
        s.last_heard = time.monotonic()
        s.advance(Phase.ENDED)
        return s
