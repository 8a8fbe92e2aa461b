"""The STT service's intake: every session in flight, what earlier runs stored about it, and each
delivered frame or end event checked and fed to its session.

A frame is taken in `seq` order. One covered by a stored transcript (a run resuming after a crash
sees it again), or a second copy of one already taken, is acknowledged and dropped; frames
missing between two received are reported and replaced by silence; a frame after the session's
end, or under the id of a session already transcribed, is reported and dropped. Bad input is its
session's problem only: an error event on that session, never an exception here.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field

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
from voxbus.session_errors import report_session_error
from voxbus.stt.cutter import CutterSettings
from voxbus.stt.session import Phase, SessionState
from voxbus.stt.vad import RATE, SileroVad
from voxbus.subjects import InvalidSessionId, validate_session_id

log = logging.getLogger(__name__)

MAX_ERROR_EVENTS = 20
"""Frame error events per session; a stream of garbage frames gets a summary, not a flood."""
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
        try:
            head = codec.decode_meta(msg.headers, AudioFrame)
        except ProtocolError as exc:
            await self._reject(s, msg, "bad_header", str(exc), None)
            return None
        late = s.late_reason(head.seq, lambda: stored_at(msg))
        if late:
            await self._reject(s, msg, "after_end", late, head.seq)
            return None
        s.max_seq = max(s.max_seq, head.seq)  # even for frames skipped or rejected: the end waits for it
        if head.seq <= s.skip_through or s.phase >= Phase.FLUSHED:
            await msg.ack()  # covered by a stored transcript (a resumed run sees it again), or too late:
            return None  # the session was finished without it (give_up_missing)
        if head.seq <= s.fed_seq:
            if not any(f.seq == head.seq for f in reversed(s.held)):
                await msg.ack()  # a second copy of a frame already taken (a publisher's retry)
            return None  # (or a redelivery of one still held: the held one will be acknowledged)
        if s.fed_seq < 0 and not s.start_checked and head.seq > s.skip_through + 1:
            s.start_checked = True
            s.start_pending = await self._none_stored_before(s, head)
        expected = s.fed_seq + 1 if s.fed_seq >= 0 else s.skip_through + 1
        if ((s.fed_seq >= 0 or s.start_pending) and head.seq > expected and self.reorder_wait > 0
                and len(s.early) < MAX_EARLY):
            s.early.setdefault(head.seq, (msg, head))  # (a redelivery of one waiting: the first is kept)
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
                await self._gap(s, msg, head)
            elif s.start_pending and head.seq > s.skip_through + 1:
                await self._never_read(s, head.seq)
            s.start_pending = False
            try:
                s.feed(msg.data, head.format, head.seq, head.offset, msg)
                self.stats.frames += 1
                if head.ts > 0:
                    self.stats.lag_s.append(time.time() - head.ts)
            except InvalidAudio as exc:
                s.skip(head.seq, frame_seconds(msg.data, head))
                await self._reject(s, msg, "invalid_audio", exc.message, head.seq)
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
                seq = min(s.early)
                msg, head = s.early.pop(seq)
                s.early_since = now if s.early else None  # frames after a further gap wait anew
                fed.append(await self._take(s, msg, head))
        return fed

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

    async def _never_read(self, s: SessionState, seq: int) -> None:
        """Frames before `seq`, the first this run takes of a session, were not in the stream."""
        lost_from, lost_to = s.skip_through + 1, seq - 1
        s.missing += lost_to - lost_from + 1
        span = frame_span(lost_from, lost_to)
        await self.report(s, "frames_missing", f"{span} were never read: the stream no longer holds them (its "
                          f"limits dropped them before the STT service took them), or they were never sent",
                          lost_from, f"{s.sid}:gap:{lost_from}", capped=True)

    async def _gap(self, s: SessionState, msg: Msg, head: AudioFrame) -> None:
        """Frames between the last one taken and this one never came: say so, keep time true."""
        missing = s.missing_seconds(head.seq, head.offset, frame_seconds(msg.data, head))
        first, last = s.fed_seq + 1, head.seq - 1
        s.missing += last - first + 1
        s.fill_gap(missing)
        self.stats.gaps += 1
        span = frame_span(first, last)
        where = f" at {(s.t0 or 0.0) + s.pos_in / RATE - missing:.2f} s" if s.t0 is not None else ""
        await self.report(s, "frames_missing", f"{span} never arrived ({missing:.2f} s of audio{where}); the "
                          f"transcript there may miss words", first, f"{s.sid}:gap:{first}", capped=True)

    async def _reject(self, s: SessionState, msg: Msg, code: str, message: str, seq: int | None) -> None:
        """A bad frame is this session's problem only: tell it, drop the frame, go on."""
        self.stats.rejected += 1
        await msg.term()
        await self.report(s, code, message, seq, f"{s.sid}:error:{msg.metadata.sequence.stream}", capped=True)

    async def report(self, s: SessionState, code: str, message: str, seq: int | None, msg_id: str, *,
                     capped: bool = False) -> None:
        """An error event on the session; frame errors stop after MAX_ERROR_EVENTS, the last saying so."""
        if capped:
            s.errors += 1
            if s.errors > MAX_ERROR_EVENTS:
                return
            if s.errors == MAX_ERROR_EVENTS:
                message += " (further errors of this session are not reported)"
        await report_session_error(self.bus, s.sid, code, message, seq=seq, msg_id=msg_id)

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
        if s.transcribed_at is not None or (end.last_seq is not None and end.last_seq <= s.transcribed_seq):
            if s.transcribed_at is not None and stored_at(msg) > s.transcribed_at and (
                    end.last_seq is None or end.last_seq > s.transcribed_seq):
                await self.report(s, "after_end", f"an end event arrived after session {sid} was transcribed; a "
                                  f"session id is used once", end.last_seq, f"{sid}:error:{msg.metadata.sequence.stream}")
            await msg.ack()  # (otherwise: the end of a session an earlier run finished, seen again)
            if not s.held and not s.pending:
                self.sessions.pop(sid, None)
            return None
        if s.end_msg is not None or s.phase >= Phase.FLUSHED:  # ended already (or finished for idleness)
            first = s.end_seq if s.end_msg is not None else s.max_seq
            if end.last_seq is not None and (first is None or end.last_seq > first):
                await self.report(s, "after_end", f"a second end event names frames up to {end.last_seq}, beyond "
                                  f"the session's end ({'last_seq ' + str(first) if first is not None else 'no last_seq'}"
                                  f"); the first end stands", end.last_seq, f"{sid}:error:{msg.metadata.sequence.stream}")
            await msg.ack()
            return None
        s.end_seq, s.end_msg = end.last_seq, msg
        s.last_heard = time.monotonic()
        s.advance(Phase.ENDED)
        return s

    async def give_up_missing(self, s: SessionState) -> None:
        """An ended session still waiting, after `session_idle`, for frames its end event named
        (lost, or refused for a bad header): finish it without them, and say so."""
        first, last = s.max_seq + 1, s.end_seq
        span = frame_span(first, last)
        if s.end_seq is not None:
            s.missing += s.end_seq - s.max_seq
        await self.report(s, "frames_missing", f"{span} named by the end event never arrived; the session is "
                          f"finished without them", first, f"{s.sid}:gap:{first}", capped=True)
        s.max_seq = max(s.max_seq, s.end_seq if s.end_seq is not None else s.max_seq)


def stored_at(msg: Msg) -> float:
    """When the server stored a JetStream message (its clock), in seconds since the epoch."""
    return msg.metadata.timestamp.timestamp()


def frame_span(first: int, last: int | None) -> str:
    return f"frame {first}" if first == last else f"frames {first}-{last}"


def frame_seconds(pcm: bytes, head: AudioFrame) -> float:
    fmt = head.format
    return len(pcm) / fmt.frame_bytes / fmt.rate if fmt.frame_bytes else 0.0
