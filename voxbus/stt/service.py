"""The STT service: consumes every session's audio frames through a durable consumer, cuts
utterances with a streaming VAD, asks the ModelManager to transcribe them (which batches them
across sessions) and publishes one transcript per utterance.

Delivery callbacks only queue messages; one loop drains the queue in batches, and a detection
task runs the VAD over every session touched since its last pass in a worker thread, overlapping
the intake, so under load a single VAD pass covers many frames of many sessions. A session's
transcriptions run in order in its own task. A frame is acknowledged only when nothing needs it
any more (see session.py); after a crash the consumer resumes at its ack floor (consumers.py)
and the last stored transcript of each session says where the service had got to.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field

from nats.aio.msg import Msg
from nats.js.errors import NotFoundError

from voxbus.bus import Bus
from voxbus.client.model_client import ModelClient
from voxbus.errors import InvalidAudio, ModelError, ProtocolError
from voxbus.messages import codec
from voxbus.messages.audio import AudioFormat, AudioFrame
from voxbus.messages.control import SessionEnd, SessionTranscribed
from voxbus.messages.text import Segment, Timings, Transcript
from voxbus.session_errors import report_session_error
from voxbus.stt.consumers import bind_resuming
from voxbus.stt.cutter import CutterSettings
from voxbus.stt.session import HeldFrame, SessionState, Utterance
from voxbus.stt.vad import RATE, SileroVad
from voxbus.subjects import InvalidSessionId, validate_session_id

log = logging.getLogger(__name__)

MAX_ERROR_EVENTS = 20
"""Error events per session; a stream of garbage frames gets a summary, not a flood."""
MODEL_FORMAT = AudioFormat(rate=RATE, channels=1, sample="f32le")


@dataclass
class SttStats:
    frames: int = 0
    rejected: int = 0
    gaps: int = 0
    utterances: int = 0
    sessions_done: int = 0
    lag_s: deque = field(default_factory=lambda: deque(maxlen=20000))
    """Wall time from a frame's capture timestamp (AudioFrame.ts) to the service processing it."""


class SttService:
    """``async with SttService(bus) as stt: ...``"""

    def __init__(self, bus: Bus, models: ModelClient | None = None) -> None:
        self.bus = bus
        self.js = bus.js
        self.subjects = bus.subjects
        st = self.cfg = bus.config.stt
        self.settings = CutterSettings(
            threshold=st.vad_threshold, min_silence_s=float(st.min_silence), min_speech_s=float(st.min_speech),
            max_utterance_s=float(st.max_utterance), pre_roll_s=float(st.pre_roll), post_roll_s=float(st.post_roll))
        self.models = models or ModelClient.from_bus(bus)
        self.sessions: dict[str, SessionState] = {}
        self.stats = SttStats()
        self._frames: list[Msg] = []
        self._ends: list[Msg] = []
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._detect_wake = asyncio.Event()
        self._stopping = False
        self._tasks: list[asyncio.Task] = []
        self._subs: list = []
        self.vad: SileroVad | None = None

    async def __aenter__(self) -> "SttService":
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        self.vad = await asyncio.to_thread(SileroVad)
        self._tasks = [asyncio.create_task(self._run(), name="stt-intake"),
                       asyncio.create_task(self._detector(), name="stt-detect"),
                       asyncio.create_task(self._housekeeping(), name="stt-housekeeping")]
        common = dict(ack_wait=float(self.cfg.ack_wait), max_ack_pending=self.cfg.max_ack_pending,
                      start_new=self.cfg.start == "new")
        self._subs.append(await bind_resuming(
            self.js, stream=self.subjects.stream("audio"), durable=self.subjects.consumer("stt"),
            filter_subject=self.subjects.all_audio_in(), cb=self._on_frame, **common))
        self._subs.append(await bind_resuming(
            self.js, stream=self.subjects.stream("ctl"), durable=self.subjects.consumer("stt-end"),
            filter_subject=self.subjects.all_control("end"), cb=self._on_end, **common))
        log.info("STT service consuming %s", self.subjects.all_audio_in())

    async def stop(self, grace: float = 10.0) -> None:
        """Stop taking frames; let transcriptions in flight finish (bounded). Whatever is left
        unacknowledged comes back to the next run."""
        self._stopping = True
        for sub in self._subs:
            try:
                await sub.unsubscribe()
            except Exception as exc:  # the connection may already be gone
                log.debug("unsubscribe: %s", exc)
        self._subs = []
        workers = [s.worker for s in self.sessions.values() if s.worker is not None]
        if workers:
            await asyncio.wait(workers, timeout=grace)
        for task in self._tasks + workers:
            task.cancel()
        await asyncio.gather(*self._tasks, *workers, return_exceptions=True)

    # -- delivery ---------------------------------------------------------------------------------
    async def _on_frame(self, msg: Msg) -> None:
        self._frames.append(msg)
        self._wake.set()

    async def _on_end(self, msg: Msg) -> None:
        self._ends.append(msg)
        self._wake.set()

    async def _run(self) -> None:
        """Frame intake. It never waits for the VAD: a detection pass runs in a worker thread while
        the next frames are decoded and fed, and the pass after it covers every session touched
        meanwhile (on 2 cores this overlap is the difference between 150 and 200+ sessions)."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            frames, self._frames = self._frames, []
            ends, self._ends = self._ends, []
            for msg in frames:
                s = await self._frame(msg)
                if s is not None:
                    self._dirty.add(s.sid)
            for msg in ends:
                s = await self._end(msg)
                if s is not None:
                    self._dirty.add(s.sid)
            if self._dirty:
                self._detect_wake.set()

    async def _detector(self) -> None:
        while True:
            await self._detect_wake.wait()
            self._detect_wake.clear()
            dirty, self._dirty = self._dirty, set()
            sessions = [self.sessions[sid] for sid in dirty if sid in self.sessions]
            if sessions:
                try:
                    await self._detect(sessions)
                except Exception:
                    log.exception("speech detection failed")

    async def _session(self, sid: str) -> SessionState:
        s = self.sessions.get(sid)
        if s is None:
            s = self.sessions[sid] = SessionState(sid, self.vad.stream(), self.settings)
            await self._recall(s)
        return s

    async def _recall(self, s: SessionState) -> None:
        """What earlier runs already stored for this session: its last transcript and whether it
        was finished. A new session costs these two direct gets, nothing more."""
        try:
            raw = await self.js.get_last_msg(self.subjects.stream("text"), self.subjects.transcript(s.sid), direct=True)
            last = codec.decode(raw.data, Transcript)
            s.next_utterance, s.skip_through = last.utterance + 1, last.last_seq
        except (NotFoundError, ProtocolError):
            pass
        try:
            raw = await self.js.get_last_msg(self.subjects.stream("ctl"), self.subjects.control(s.sid, "transcribed"),
                                             direct=True)
            done = codec.decode(raw.data, SessionTranscribed)
            s.transcribed_seq = done.last_seq if done.last_seq is not None else -1
            s.transcribed_at = done.ts
            s.skip_through = max(s.skip_through, s.transcribed_seq)
        except (NotFoundError, ProtocolError):
            pass

    async def _frame(self, msg: Msg) -> SessionState | None:
        try:
            sid = validate_session_id(self.subjects.session_from(msg.subject))
        except (InvalidSessionId, ValueError) as exc:
            log.warning("dropping a frame on %s: %s", msg.subject, exc)
            await msg.term()
            return None
        s = await self._session(sid)
        try:
            head = codec.decode_meta(msg.headers, AudioFrame)
        except ProtocolError as exc:
            await self._reject(s, msg, "bad_header", str(exc), None)
            return None
        late = self._after_end(s, head)
        if late:
            await self._reject(s, msg, "after_end", late, head.seq)
            return None
        s.max_seq = max(s.max_seq, head.seq)  # even for frames skipped or rejected: the end waits for it
        if head.seq <= s.skip_through or s.done:
            await msg.ack()  # already covered by a stored transcript (a resumed run sees it again)
            return None
        if head.seq <= s.fed_seq:
            if not any(f.seq == head.seq for f in reversed(s.held)):
                await msg.ack()  # a second copy of a frame already taken (a publisher's retry)
            return None  # (or a redelivery of one still held: the held one will be acknowledged)
        if s.fed_seq >= 0 and head.seq > s.fed_seq + 1:
            await self._gap(s, msg, head)
        try:
            s.feed(msg.data, head.format, head.seq, head.offset, msg)
        except InvalidAudio as exc:
            await self._reject(s, msg, "invalid_audio", exc.message, head.seq)
            return None
        self.stats.frames += 1
        if head.ts > 0:
            self.stats.lag_s.append(time.time() - head.ts)
        return s

    async def _gap(self, s: SessionState, msg: Msg, head: AudioFrame) -> None:
        """Frames between the last one taken and this one never came: say so, keep time true."""
        frame_s = len(msg.data) / head.format.frame_bytes / head.format.rate if head.format.frame_bytes else 0.0
        missing = s.missing_seconds(head.seq, head.offset, frame_s)
        first, last = s.fed_seq + 1, head.seq - 1
        s.fill_gap(missing)
        span = f"frame {first}" if first == last else f"frames {first}-{last}"
        self.stats.gaps += 1
        s.errors += 1
        if s.errors <= MAX_ERROR_EVENTS:
            where = f" at {(s.t0 or 0.0) + s.pos_in / RATE - missing:.2f} s" if s.t0 is not None else ""
            await self._error_event(s, "frames_missing", f"{span} never arrived ({missing:.2f} s of audio{where}); "
                                    f"the transcript there may miss words", first, msg_id=f"{s.sid}:gap:{first}")

    @staticmethod
    def _after_end(s: SessionState, head: AudioFrame) -> str:
        """Why a frame belongs to no session any more ('' if it does). A session is transcribed
        once: audio sent after its end, or under its id once it was transcribed, is reported
        rather than silently dropped or turned into a second `transcribed`. A redelivery after a
        restart is neither: it was captured before the session finished, and its seq is covered."""
        if s.transcribed_at is not None and (head.seq > s.transcribed_seq or head.ts > s.transcribed_at):
            return (f"frame {head.seq} arrived after session {s.sid} was transcribed; "
                    f"a session id is used once: send new audio as a new session")
        if s.end_seq is not None and head.seq > s.end_seq:
            return f"frame {head.seq} comes after the session's end event (last_seq {s.end_seq})"
        return ""

    async def _end(self, msg: Msg) -> SessionState | None:
        try:
            end = codec.decode(msg.data, SessionEnd)
            sid = validate_session_id(self.subjects.session_from(msg.subject))
        except (ProtocolError, InvalidSessionId, ValueError) as exc:
            log.warning("dropping a malformed end event on %s: %s", msg.subject, exc)
            await msg.term()
            return None
        s = await self._session(sid)
        if end.last_seq is not None and end.last_seq <= s.transcribed_seq:
            await msg.ack()  # finished by an earlier run
            if not s.held and not s.pending:
                self.sessions.pop(sid, None)
            return None
        if s.end_msg is not None:
            await s.end_msg.ack()  # a repeated end event: keep the newest
        s.ended, s.end_seq, s.end_msg = True, end.last_seq, msg
        return s

    async def _reject(self, s: SessionState, msg: Msg, code: str, message: str, seq: int | None) -> None:
        """A bad frame is this session's problem only: tell it, drop the frame, go on."""
        self.stats.rejected += 1
        s.errors += 1
        await msg.term()
        if s.errors <= MAX_ERROR_EVENTS:
            if s.errors == MAX_ERROR_EVENTS:
                message += f" (further errors of this session are not reported)"
            await self._error_event(s, code, message, seq, msg_id=f"{s.sid}:error:{msg.metadata.sequence.stream}")

    async def _error_event(self, s: SessionState, code: str, message: str, seq: int | None, msg_id: str) -> None:
        await report_session_error(self.bus, s.sid, code, message, seq=seq, msg_id=msg_id)

    # -- speech detection and utterances ----------------------------------------------------------
    async def _detect(self, sessions: list[SessionState]) -> None:
        work = []
        for s in sessions:
            final = s.complete and not s.flushed
            position, audio = s.vad_input(final)
            work.append((s, final, position, audio))
        probs = await asyncio.to_thread(
            lambda: [s.vad.probabilities(audio) if len(audio) else audio for s, _, _, audio in work])
        for (s, final, position, _), p in zip(work, probs):
            cuts = s.apply(position, p, final)
            if final:
                s.flushed = True
            s.pending.extend(s.to_utterances(cuts))
            if s.pending and s.worker is None:
                s.worker = asyncio.create_task(self._transcribe_pending(s), name=f"stt-{s.sid}")
            await self._ack(s.settled())
            await self._maybe_finish(s)

    async def _transcribe_pending(self, s: SessionState) -> None:
        try:
            while s.pending:
                u = s.pending[0]
                try:
                    reply = await self._transcribe(s, u)
                    if reply is not None:
                        await self._publish(s, u, reply)
                except (asyncio.CancelledError, KeyboardInterrupt):
                    raise
                except Exception:  # never lose the utterance over a bug or a bus hiccup: retry it
                    log.exception("session %s: utterance at %.2fs failed; retrying", s.sid, u.t_start)
                    await asyncio.sleep(1.0)
                    continue
                s.pending.popleft()
                await self._ack(s.settled())
        finally:
            s.worker = None
        await self._maybe_finish(s)

    async def _transcribe(self, s: SessionState, u: Utterance):
        backoff = 0.2
        while True:
            try:
                return await self.models.transcribe(u.audio.tobytes(), MODEL_FORMAT, model=self.cfg.model,
                                                    language=self.cfg.language, session=s.sid)
            except ModelError as exc:
                if exc.transient and not self._stopping:
                    pause = max(backoff, exc.retry_after or 0.0)  # an overloaded manager says when
                    log.warning("session %s: transcription failed (%s); retrying in %.1fs", s.sid, exc, pause)
                    await asyncio.sleep(pause)
                    backoff = min(backoff * 2, 5.0)
                    continue
                if self._stopping:
                    raise asyncio.CancelledError from exc
                await self._error_event(s, exc.code, f"utterance at {u.t_start:.2f}s: {exc.message}", u.first_seq,
                                        msg_id=f"{s.sid}:error:utt{u.first_seq}")
                return None

    async def _publish(self, s: SessionState, u: Utterance, reply) -> None:
        index = s.next_utterance
        transcript = Transcript(
            session=s.sid, utterance=index, text=reply.text, start=u.t_start, end=u.t_end,
            segments=[Segment(start=round(u.t_start + g.start, 3), end=round(min(u.t_start + g.end, u.t_end), 3),
                              text=g.text) for g in reply.segments],
            language=reply.language, model=reply.model, first_seq=u.first_seq, last_seq=u.last_seq,
            timings=Timings(queue_ms=reply.timings.queue_ms, inference_ms=reply.timings.inference_ms,
                            total_ms=round((time.monotonic() - u.last_frame_at) * 1000, 2)),
        )
        data = codec.encode(transcript)
        backoff = 0.2
        while True:  # the frames stay unacknowledged until this is stored: retrying loses nothing
            try:
                await self.js.publish(self.subjects.transcript(s.sid), data, headers={"Nats-Msg-Id": f"{s.sid}:{index}"})
                break
            except Exception as exc:
                if self._stopping:
                    raise
                log.warning("session %s: storing transcript %d failed (%s); retrying", s.sid, index, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
        s.next_utterance += 1
        self.stats.utterances += 1

    async def _maybe_finish(self, s: SessionState) -> None:
        if not (s.complete and s.flushed) or s.pending or s.worker is not None or s.done or s.finishing:
            return
        s.finishing = True  # the loop and the session's worker may both get here
        last_seq = s.end_seq if s.end_seq is not None else s.max_seq
        event = SessionTranscribed(session=s.sid, ts=time.time(), utterances=s.next_utterance,
                                   last_seq=last_seq if last_seq >= 0 else None)
        await self.js.publish(self.subjects.control(s.sid, "transcribed"), codec.encode(event),
                              headers={"Nats-Msg-Id": f"{s.sid}:transcribed"})
        s.done = True
        await self._ack(s.settled())
        if s.end_msg is not None:
            await s.end_msg.ack()
        self.sessions.pop(s.sid, None)
        self.stats.sessions_done += 1
        log.info("session %s transcribed: %d utterances", s.sid, s.next_utterance)

    @staticmethod
    async def _ack(frames: list[HeldFrame]) -> None:
        for f in frames:
            await f.msg.ack()

    # -- keeping held frames ours, finishing idle sessions ------------------------------------------
    async def _housekeeping(self) -> None:
        period = max(min(float(self.cfg.ack_wait) / 3, 5.0), 0.2)
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for s in list(self.sessions.values()):
                for f in s.stale(now - float(self.cfg.ack_wait) / 2):
                    await f.msg.in_progress()
                    f.touched = now
                if s.end_msg is not None:
                    await s.end_msg.in_progress()
                if not s.ended and now - s.last_frame > float(self.cfg.session_idle):
                    if s.held or s.pending or s.max_seq >= 0:
                        log.info("session %s idle for %.0fs: finishing it", s.sid, now - s.last_frame)
                        s.ended = True
                        self._dirty.add(s.sid)
                        self._detect_wake.set()
                    else:
                        self.sessions.pop(s.sid, None)
