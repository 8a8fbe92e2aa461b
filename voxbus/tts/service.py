"""The TTS service: text to speak for a session in, numbered audio chunks out.

Consumes ``{p}.tts.<sid>.say`` (SayRequest: whole texts, or a streamed reply in pieces with
``final=False`` until its last piece; voice and format from the request, else from the session's
start event) through a durable consumer, cuts the text into sentences as
it arrives, asks the ModelManager to synthesize each in the format the request names (the manager
resamples and converts), and publishes SpeechChunks to ``{p}.audio.<sid>.out`` with a final
marker per turn. An interrupt on the session drops its queued text and stops its audio at once.
A held turn (a reply the assistant started before the turn was sure) is synthesized but kept
here until the assistant releases it (published at once) or discards it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import msgspec
import nats.errors
from nats.aio.msg import Msg

from voxbus.audio import frame_bytes
from voxbus.bus import Bus
from voxbus.client.model_client import ModelClient
from voxbus.errors import ModelError, ProtocolError
from voxbus.messages import codec
from voxbus.messages.audio import AudioFormat, SpeechChunk
from voxbus.messages.control import SessionStart
from voxbus.messages.text import SayRequest
from voxbus.sentences import SentenceSplitter, speakable
from voxbus.service_base import BusService
from voxbus.session_errors import report_session_error
from voxbus.lookups import last_stored

log = logging.getLogger(__name__)

CHUNK_S = 0.5
"""Audio per published chunk: small enough to start playing early, far below max_payload."""


@dataclass
class _Piece:
    text: str
    turn: int
    voice: str | None
    format: AudioFormat | None
    final: bool  # the last piece of its turn
    held: bool = False  # synthesized into the turn's held audio, not published (SayRequest.held)
    release: bool = False  # a marker: publish the turn's held audio now


@dataclass
class _Session:
    sid: str
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    splitters: dict[int, SentenceSplitter] = field(default_factory=dict)
    seq: int = 0
    epoch: int = 0  # bumped by an interrupt: audio of an older epoch is never published
    worker: asyncio.Task | None = None
    voice: str | None = None  # the session's own choices, from its start event
    output: AudioFormat | None = None
    holding: set[int] = field(default_factory=set)  # turns whose audio is held until released
    held_audio: dict[int, list[tuple[SpeechChunk, bytes]]] = field(default_factory=dict)
    hold_epoch: dict[int, int] = field(default_factory=dict)  # bumped by a discard of that turn


class TtsService(BusService):
    service_kind = "tts"

    def __init__(self, bus: Bus, models: ModelClient | None = None) -> None:
        super().__init__()
        self.bus = bus
        self.subjects = bus.subjects
        self.models = models or ModelClient.from_bus(bus)
        self.sessions: dict[str, _Session] = {}
        self.idle = float(bus.config.tts.session_idle)

    async def start(self) -> None:
        self._subs = [await self.bus.nc.subscribe(self.subjects.all_control("interrupt"), cb=self._on_interrupt)]
        await self._keep_consumer(self.bus, stream=self.subjects.stream("text"), durable=self.subjects.consumer("tts"),
                                  filter_subject=self.subjects.all_say(), cb=self._on_say,
                                  ack_wait=float(self.bus.config.tts.consumer.ack_wait),
                                  max_ack_pending=self.bus.config.tts.consumer.max_ack_pending, start_new=True)
        await self._announce(self.bus, "voxbus TTS: speaks say requests into sessions' audio")
        log.info("TTS service consuming %s", self.subjects.all_say())

    async def stop(self) -> None:
        await self._unsubscribe()
        await self._end_tasks(s.worker for s in self.sessions.values())

    async def _session(self, sid: str) -> _Session:
        s = self.sessions.get(sid)
        if s is None:
            s = _Session(sid)
            await self._recall(s)  # kept only once known (lookups.py), or chunk numbers could restart
            s = self.sessions.setdefault(sid, s)
        if s.worker is None or s.worker.done():
            s.worker = asyncio.create_task(self._speak(s), name=f"tts-{sid}")
        return s

    async def _recall(self, s: _Session) -> None:
        """The voice and output format the session asked for when it started, if it did, and
        where its chunk numbering goes on: a session forgotten while idle (or spoken for by an
        earlier run) keeps counting from its last stored chunk, never from 0 again."""
        raw = await last_stored(self.bus, self.subjects.stream("ctl"), self.subjects.control(s.sid, "start"))
        if raw is not None:
            try:
                start = codec.decode(raw.data, SessionStart)
                s.voice, s.output = start.voice, start.output
            except ProtocolError:
                pass
        raw = await last_stored(self.bus, self.subjects.stream("audio"), self.subjects.audio_out(s.sid))
        if raw is not None:
            try:
                s.seq = codec.decode_meta(raw.headers, SpeechChunk).seq + 1
            except ProtocolError:
                pass

    async def _on_say(self, msg: Msg) -> None:
        sid = self.subjects.session_from(msg.subject)
        try:
            req = codec.decode(msg.data, SayRequest)
        except ProtocolError as exc:
            await msg.term()
            await self._error(sid, "bad_request", str(exc))
            return
        # Acknowledged at once: after a crash, a reply's stale speech is not worth speaking late.
        await msg.ack()
        try:
            s = await self._session(sid)
        except (nats.errors.Error, TimeoutError) as exc:  # what lookups.last_stored raises after its retries
            await self._error(sid, "unavailable", f"the session's stored state could not be read ({exc!r}); this "
                              f"text is not spoken")
            return
        if req.settle == "discard":
            self._discard(s, req.turn)
            return
        if req.settle == "release":
            s.holding.discard(req.turn)
            s.queue.put_nowait(_Piece("", req.turn, None, None, False, release=True))
        if req.held:
            s.holding.add(req.turn)
        held = req.turn in s.holding
        voice, fmt = req.voice or s.voice, req.format or s.output
        splitter = s.splitters.setdefault(req.turn, SentenceSplitter())
        pieces = splitter.feed(req.text) + (splitter.flush() if req.final or req.speak_now else [])
        if req.final:
            s.splitters.pop(req.turn, None)
            pieces = pieces or [""]  # still send the turn's final marker
        for i, text in enumerate(pieces):
            s.queue.put_nowait(_Piece(text, req.turn, voice, fmt, req.final and i == len(pieces) - 1, held=held))

    def _discard(self, s: _Session, turn: int) -> None:
        """A held turn that will not be: its audio, its queued text and its splitter go."""
        s.holding.discard(turn)
        s.held_audio.pop(turn, None)
        s.splitters.pop(turn, None)
        s.hold_epoch[turn] = s.hold_epoch.get(turn, 0) + 1
        keep = [p for p in (s.queue.get_nowait() for _ in range(s.queue.qsize())) if not (p.turn == turn and p.held)]
        for p in keep:
            s.queue.put_nowait(p)

    async def _on_interrupt(self, msg: Msg) -> None:
        sid = self.subjects.session_from(msg.subject)
        s = self.sessions.get(sid)
        if s is None:
            return
        s.epoch += 1
        s.splitters.clear()
        s.holding.clear()
        s.held_audio.clear()
        dropped = 0
        while not s.queue.empty():
            s.queue.get_nowait()
            dropped += 1
        log.info("interrupt: session %s dropped %d queued sentences", sid, dropped)

    async def _speak(self, s: _Session) -> None:
        """Speak the session's pieces in order; after `tts.session_idle` with nothing to say, forget
        the session (a long-running service keeps no state for sessions long gone)."""
        while True:
            try:
                piece: _Piece = await asyncio.wait_for(s.queue.get(), self.idle)
            except asyncio.TimeoutError:
                if s.queue.empty() and not any(sp.buffer.strip() for sp in s.splitters.values()):
                    if self.sessions.get(s.sid) is s:
                        del self.sessions[s.sid]
                    s.worker = None
                    return
                continue
            epoch = s.epoch
            if piece.release:
                try:
                    await self._release(s, piece.turn)
                except Exception as exc:  # (the bus away: the held audio is lost, the turn goes on)
                    log.exception("session %s: releasing turn %d's held audio failed", s.sid, piece.turn)
                    await self._error(s.sid, "unavailable", f"the first words of reply {piece.turn} were lost: {exc!r}")
                continue
            try:
                if piece.text:
                    await self._synthesize(s, piece, epoch)
            except ModelError as exc:
                await self._error(s.sid, exc.code, f"cannot speak {piece.text[:40]!r}: {exc.message}")
            except Exception:
                log.exception("session %s: speaking failed", s.sid)
            # The turn's end is marked even when a sentence failed: a listener must not wait forever.
            if piece.final and epoch == s.epoch:
                end = SpeechChunk(format=piece.format or AudioFormat(), seq=s.seq, turn=piece.turn, final=True)
                if piece.held:
                    s.held_audio.setdefault(piece.turn, []).append((end, b""))
                    continue
                try:
                    await self._publish(s, end, b"")
                except Exception:
                    log.exception("session %s: marking the end of turn %d failed", s.sid, piece.turn)

    async def _synthesize(self, s: _Session, piece: _Piece, epoch: int) -> None:
        model, _, speaker = (piece.voice or "").partition(":")
        text = speakable(piece.text)
        if not text.strip():
            return
        hold_epoch = s.hold_epoch.get(piece.turn, 0)
        pcm, meta = await self.models.synthesize(text, model=model or None, voice=speaker or None,
                                                 format=piece.format)
        if epoch != s.epoch:
            return  # interrupted while synthesizing: this audio is never published
        step = frame_bytes(meta.format, CHUNK_S * 1000)
        if piece.held:
            if hold_epoch == s.hold_epoch.get(piece.turn, 0):  # (not discarded meanwhile)
                s.held_audio.setdefault(piece.turn, []).extend(
                    (SpeechChunk(format=meta.format, seq=0, turn=piece.turn, text=piece.text if i == 0 else ""),
                     pcm[i:i + step]) for i in range(0, len(pcm), step))
            return
        for i in range(0, len(pcm), step):
            if epoch != s.epoch:
                return
            await self._publish(s, SpeechChunk(format=meta.format, seq=s.seq, turn=piece.turn,
                                               text=piece.text if i == 0 else ""), pcm[i:i + step])

    async def _release(self, s: _Session, turn: int) -> None:
        epoch = s.epoch
        for chunk, pcm in s.held_audio.pop(turn, []):
            if epoch != s.epoch:
                return
            await self._publish(s, msgspec.structs.replace(chunk, seq=s.seq), pcm)

    async def _publish(self, s: _Session, chunk: SpeechChunk, pcm: bytes) -> None:
        s.seq += 1
        await self.bus.store(self.subjects.audio_out(s.sid), pcm, headers=codec.meta_headers(chunk))

    async def _error(self, sid: str, code: str, message: str) -> None:
        await report_session_error(self.bus, sid, code, message)
