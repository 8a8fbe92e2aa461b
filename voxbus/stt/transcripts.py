"""Turning a session's cut utterances into stored transcripts, in order, and finishing it.

Each session's utterances are transcribed by its own task, one after another, while different
sessions run concurrently (so the manager can batch them). An utterance's frames stay
unacknowledged until its transcript is stored, so every retry here loses nothing: a transient
model error (no manager, a crashed worker, an overloaded queue, which says when to come back) or
a failed store is retried with backoff; a permanent model error becomes an error event on the
session and the utterance is given up.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

import stamina

from voxbus.bus import Bus
from voxbus.client.model_client import ModelClient
from voxbus.config.schema import SttConfig
from voxbus.errors import ModelError, Timeout
from voxbus.messages import codec
from voxbus.messages.audio import AudioFormat
from voxbus.messages.control import SessionTranscribed
from voxbus.messages.text import Segment, Timings, Transcript, Word
from voxbus.stt.intake import FrameIntake, SttStats
from voxbus.stt.session import HeldFrame, Phase, SessionState, Utterance
from voxbus.stt.vad import RATE

log = logging.getLogger(__name__)

MODEL_FORMAT = AudioFormat(rate=RATE, channels=1, sample="f32le")
StageHook = Callable[..., None]
"""on_stage(stage, session, **times): told when a step of the STT path happens (SttService)."""
EarlyLookup = Callable[[SessionState, int, int], "asyncio.Future | None"]
"""(session, start, end) -> the early decode of exactly that audio, if one was made."""
FOREVER = {"attempts": None, "timeout": None, "wait_initial": 0.2, "wait_max": 5.0}


class TranscriptWriter:
    def __init__(self, bus: Bus, models: ModelClient, cfg: SttConfig, intake: FrameIntake, stats: SttStats,
                 stopping: Callable[[], bool], on_stage: StageHook | None = None) -> None:
        self.bus = bus
        self.js = bus.js
        self.subjects = bus.subjects
        self.models = models
        self.cfg = cfg
        self.intake = intake
        self.stats = stats
        self.stopping = stopping
        self.on_stage = on_stage
        self.early: EarlyLookup | None = None
        self.in_flight = 0  # sessions whose utterances are being transcribed (interim decodes wait meanwhile)

    def start(self, s: SessionState) -> None:
        """Make sure the session's utterances are being worked through."""
        if s.pending and s.worker is None and not s.released:
            self.in_flight += 1  # (counted now: interim decodes in the same VAD pass must wait)
            s.worker = asyncio.create_task(self._work(s), name=f"stt-{s.sid}")

    async def _work(self, s: SessionState) -> None:
        try:
            while s.pending:
                u = s.pending[0]
                try:
                    started = time.time()
                    reply = await self._transcribe(s, u)
                    if self.on_stage is not None:
                        self.on_stage("transcribe", s.sid, started=started, done=time.time(), seconds=u.t_end - u.t_start)
                    if reply is not None:
                        started = time.time()
                        await self._store(s, u, reply)
                        if self.on_stage is not None:
                            self.on_stage("store", s.sid, started=started, done=time.time())
                except (asyncio.CancelledError, KeyboardInterrupt):
                    raise
                except Exception:  # never lose the utterance over a bug or a bus hiccup: retry it
                    log.exception("session %s: utterance at %.2fs failed; retrying", s.sid, u.t_start)
                    await asyncio.sleep(1.0)
                    continue
                s.pending.popleft()
                await ack(s.settled())
        finally:
            s.worker = None
            self.in_flight -= 1
        await self.finish_if_done(s)

    def _retry_model_error(self, exc: Exception) -> bool | float:
        """Transient model errors, and a deadline that passed while the manager worked (final for
        that call, not for the utterance: an utterance is transcribed or reported, never dropped)."""
        if not isinstance(exc, ModelError) or not (exc.transient or isinstance(exc, Timeout)) or self.stopping():
            return False
        log.warning("transcription failed (%s); retrying", exc)
        return exc.retry_after or True  # an overloaded manager says when

    async def _transcribe(self, s: SessionState, u: Utterance):
        early = self.early(s, u.start, u.end) if self.early is not None else None
        if early is not None:  # decoded from this very audio while the pause went on (partials.py)
            try:
                reply = await asyncio.shield(early)
            except asyncio.CancelledError:
                if not early.cancelled():
                    raise  # this worker is being stopped
                reply = None
            except Exception:  # the early decode failed: decode anew
                reply = None
            if reply is not None:
                return reply
        try:
            async for attempt in stamina.retry_context(on=self._retry_model_error, **FOREVER):
                with attempt:
                    return await self.models.transcribe(u.audio.tobytes(), MODEL_FORMAT, model=self.cfg.model,
                                                        language=self.cfg.language, words=self.cfg.words,
                                                        session=s.sid)
        except ModelError as exc:
            if self.stopping():
                raise asyncio.CancelledError from exc
            await self.intake.reports.report(s, exc.code, f"utterance at {u.t_start:.2f}s: {exc.message}", u.first_seq,
                                     f"{s.sid}:error:utt{u.first_seq}")
            return None

    def _retry_store(self, exc: Exception) -> bool:
        if self.stopping():
            return False
        log.warning("storing a transcript failed (%s); retrying", exc)
        return True

    async def _store(self, s: SessionState, u: Utterance, reply) -> None:
        index = s.next_utterance
        transcript = Transcript(
            session=s.sid, utterance=index, text=reply.text, start=u.t_start, end=u.t_end,
            segments=[Segment(start=round(u.t_start + g.start, 3), end=round(min(u.t_start + g.end, u.t_end), 3),
                              text=g.text) for g in reply.segments],
            words=[Word(word=w.word, start=round(min(u.t_start + w.start, u.t_end), 3),
                        end=round(min(u.t_start + w.end, u.t_end), 3), probability=w.probability) for w in reply.words],
            language=reply.language, model=reply.model, first_seq=u.first_seq, last_seq=u.last_seq,
            timings=Timings(queue_ms=reply.timings.queue_ms, inference_ms=reply.timings.inference_ms,
                            total_ms=round((time.monotonic() - u.last_frame_at) * 1000, 2)),
        )
        data = codec.encode(transcript)
        async for attempt in stamina.retry_context(on=self._retry_store, **FOREVER):
            with attempt:
                await self.bus.store(self.subjects.transcript(s.sid), data, headers={"Nats-Msg-Id": f"{s.sid}:{index}"})
        s.next_utterance += 1
        self.stats.utterances += 1

    async def finish_if_done(self, s: SessionState) -> None:
        """Once an ended session's last transcript is stored: its `transcribed` event, once."""
        if s.phase is not Phase.FLUSHED or s.pending or s.worker is not None or s.released:
            return
        s.advance(Phase.FINISHING)  # the loop and the session's worker may both get here
        await self.intake.reports.flush_duplicates(s)  # (its error events come before `transcribed`)
        last_seq = s.end_seq if s.end_seq is not None else s.max_seq
        event = SessionTranscribed(session=s.sid, ts=time.time(), utterances=s.next_utterance,
                                   last_seq=last_seq if last_seq >= 0 else None, frames_missing=s.missing)
        try:
            async for attempt in stamina.retry_context(on=self._retry_store, **FOREVER):
                with attempt:
                    await self.bus.store(self.subjects.control(s.sid, "transcribed"), codec.encode(event),
                                          headers={"Nats-Msg-Id": f"{s.sid}:transcribed"})
        except BaseException:
            s.phase = Phase.FLUSHED  # stopping (or a bug): the next run, or the next pass, finishes it
            raise
        s.advance(Phase.DONE)
        await ack(s.settled())
        if s.end_msg is not None:
            await s.end_msg.ack()
        self.intake.sessions.pop(s.sid, None)
        self.stats.sessions_done += 1
        log.info("session %s transcribed: %d utterances", s.sid, s.next_utterance)


async def ack(frames: list[HeldFrame]) -> None:
    for f in frames:
        await f.msg.ack()
