"""Interim transcripts while an utterance is open, and its early final once the speaker pauses.

After each VAD pass the STT service shows every session it touched to `consider`:
- An open utterance with enough new speech (`stt.partial_first`, then `partial_interval`) gets an
  interim decode of all of it so far, sent as `interim` so the manager batches it after every
  waiting final; the reply becomes a PartialTranscript with a stable prefix (agreement.py).
  Under load this degrades by itself: a session has one interim decode in flight at a time, none
  starts while any utterance's final is being transcribed or while the speaker pauses, and
  `partials_in_flight` bounds them over all sessions: the interval stretches, finals keep the model.
- Once the speaker has paused for `post_roll`, the utterance is decoded as it would end there
  (`early_final`), exactly the audio its final would have. If the pause goes on to end it there,
  the final reuses that decode instead of waiting for a new one; if the text reads as a finished
  sentence, a shorter pause (`complete_silence`) already ends it. If speech resumes, the decode
  is only a partial (`closing`), and the final decodes the longer utterance as usual.
A session's start event may turn partials off or ask for another interval (read once, lazily).
Nothing here holds frames or acknowledges anything: a partial lost to a crash is never missed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Callable

from voxbus.bus import Bus
from voxbus.client.model_client import ModelClient
from voxbus.config.schema import SttConfig
from voxbus.errors import ModelError, ProtocolError
from voxbus.lookups import last_stored
from voxbus.messages import codec
from voxbus.messages.control import SessionStart
from voxbus.messages.model import TranscribeReply
from voxbus.messages.text import PartialTranscript
from voxbus.stt.agreement import LocalAgreement, reads_complete
from voxbus.stt.cutter import Cut
from voxbus.stt.session import SessionState
from voxbus.stt.transcripts import MODEL_FORMAT
from voxbus.stt.vad import RATE

log = logging.getLogger(__name__)

INTERIM_DEADLINE_S = 5.0
"""An interim decode not answered within this long is given up (the next one covers more audio)."""


@dataclass
class EarlyFinal:
    cut: Cut
    task: asyncio.Task  # -> TranscribeReply | None


@dataclass
class SessionPartials:
    """One session's interim state."""

    enabled: bool | None = None  # None: its start event not read yet
    interval: int = 0  # samples of speech between two partials
    utterance: tuple[int, int] | None = None  # (index, start) of the utterance the rest is about
    agreement: LocalAgreement = field(default_factory=LocalAgreement)
    revision: int = 0
    heard: int = 0  # cutter position the last interim decode covered
    published_end: int = 0  # audio end of the last partial published
    task: asyncio.Task | None = None  # the interim decode (or start-event lookup) in flight
    early: EarlyFinal | None = None


class PartialMaker:
    def __init__(self, bus: Bus, models: ModelClient, cfg: SttConfig, sessions: dict[str, SessionState],
                 wake: Callable[[str], None], finals_in_flight: Callable[[], int]) -> None:
        self.bus = bus
        self.finals_in_flight = finals_in_flight
        self.wake = wake  # a VAD pass over the session soon (its cutter may close the utterance now)
        self.models = models
        self.cfg = cfg
        self.sessions = sessions
        self.first = round(float(cfg.partial_first) * RATE)
        self.in_flight = 0
        self.early_in_flight = 0
        self.published = 0
        self.early_used = 0

    # -- scheduling (called after every VAD pass over the session) ------------------------------
    def consider(self, s: SessionState) -> None:
        c = s.cutter
        if not c.open or s.pending or s.released:
            return
        p = s.partials
        if p is None:
            p = s.partials = SessionPartials()
        key = (s.next_utterance, c.start)
        if p.utterance != key:  # a new utterance (or one cut at max_utterance): start afresh
            p.utterance, p.agreement, p.revision, p.heard, p.published_end = key, LocalAgreement(), 0, c.start, 0
        if self.cfg.early_final:
            cut = c.would_end()
            if cut is not None and (p.early is None or p.early.cut != cut):
                self.early_in_flight += 1
                p.early = EarlyFinal(cut, asyncio.create_task(self._early(s, p, key, cut), name=f"stt-early-{s.sid}"))
        if p.task is not None:
            return
        if p.enabled is None:  # (its start event may turn them on or off, whatever stt.partials says)
            p.task = asyncio.create_task(self._read_start(s, p), name=f"stt-partials-{s.sid}")
            return
        due = self.first if p.revision == 0 else p.interval
        if not p.enabled or c.pos - p.heard < due or c.silence or not self._room():
            return  # (in a pause the early final speaks for it)
        p.heard = c.pos
        self.in_flight += 1  # (counted now: the rest of this VAD pass must see it)
        p.task = asyncio.create_task(self._interim(s, p, key, c.start, c.pos), name=f"stt-partial-{s.sid}")

    def _room(self) -> bool:
        """Finals first: no interim decode starts while any utterance is being transcribed, early or not."""
        return (self.in_flight < self.cfg.partials_in_flight and not self.finals_in_flight()
                and not self.early_in_flight)

    def early_reply(self, s: SessionState, start: int, end: int) -> asyncio.Task | None:
        """The early decode of exactly this utterance's audio, if one was made (for its final)."""
        p = s.partials
        if p is not None and p.early is not None and p.early.cut == Cut(start, end):
            self.early_used += 1
            return p.early.task
        return None

    # -- the decodes ----------------------------------------------------------------------------
    async def _read_start(self, s: SessionState, p: SessionPartials) -> None:
        """Whether the session's start event turned partials off, or asked for another interval."""
        start = None
        try:
            raw = await last_stored(self.bus, self.bus.subjects.stream("ctl"), self.bus.subjects.control(s.sid, "start"))
            if raw is not None:
                start = codec.decode(raw.data, SessionStart)
        except ProtocolError:
            pass
        except Exception as exc:  # the bus is away: try again with the next pass
            log.debug("session %s: start event not read (%s)", s.sid, exc)
            p.task = None
            return
        p.enabled = self.cfg.partials if start is None or start.partials is None else start.partials
        # (a session that turned partials on itself needs early finals too, even with stt.partials off)
        interval = float(self.cfg.partial_interval) if start is None or start.partial_interval is None \
            else start.partial_interval
        p.interval = round(interval * RATE)
        p.task = None

    async def _interim(self, s: SessionState, p: SessionPartials, key: tuple[int, int], start: int, end: int) -> None:
        try:
            reply = await self.models.transcribe(
                s.slice(start, end).tobytes(), MODEL_FORMAT, model=self.cfg.model, language=self.cfg.language,
                session=s.sid, interim=True, deadline=time.monotonic() + INTERIM_DEADLINE_S)
            await self._publish(s, p, key, end, reply, closing=False)
        except (ModelError, asyncio.TimeoutError) as exc:
            log.debug("session %s: interim decode failed (%s)", s.sid, exc)
        except Exception:
            log.exception("session %s: interim transcript failed", s.sid)
        finally:
            self.in_flight -= 1
            p.task = None

    async def _early(self, s: SessionState, p: SessionPartials, key: tuple[int, int], cut: Cut) -> TranscribeReply | None:
        try:
            reply = await self.models.transcribe(
                s.slice(cut.start, cut.end).tobytes(), MODEL_FORMAT, model=self.cfg.model, language=self.cfg.language,
                words=self.cfg.words, session=s.sid)  # (the client's deadline, as the final's own request)
        except Exception as exc:  # the final asks again
            log.debug("session %s: early final failed (%s)", s.sid, exc)
            return None
        finally:
            self.early_in_flight -= 1
        if reads_complete(reply.text):
            s.cutter.hint_complete(cut)
            self.wake(s.sid)  # the pause may already be long enough
        try:
            if p.enabled:
                await self._publish(s, p, key, cut.end, reply, closing=True)
        except Exception:
            log.exception("session %s: closing partial failed", s.sid)
        return reply

    async def _publish(self, s: SessionState, p: SessionPartials, key: tuple[int, int], end: int,
                       reply: TranscribeReply, closing: bool) -> None:
        # Only while that utterance is still open here: none comes after (or instead of) its final.
        if (self.sessions.get(s.sid) is not s or s.released or p.utterance != key or s.pending
                or (s.next_utterance, s.cutter.start) != key or not reply.text.strip() or end < p.published_end):
            return  # (an older decode answering after a newer one: its text would go backwards)
        p.published_end = end
        text, stable = p.agreement.update(reply.text)
        t0 = s.t0 or 0.0
        partial = PartialTranscript(session=s.sid, utterance=key[0], revision=p.revision, text=text, stable=stable,
                                    start=round(t0 + key[1] / RATE, 3), end=round(t0 + end / RATE, 3),
                                    closing=closing, hypothesis=reply.text if closing else "", model=reply.model)
        p.revision += 1
        self.published += 1
        await self.bus.nc.publish(self.bus.subjects.partial(s.sid), codec.encode(partial))

    def forget_all(self) -> None:
        """Stopping: end the interim decodes in flight (what they would publish is no loss). Early
        finals are left to end by themselves (within their deadline): a final may be waiting on one."""
        for s in self.sessions.values():
            p = s.partials
            if p is not None and p.task is not None and not p.task.done():
                p.task.cancel()
