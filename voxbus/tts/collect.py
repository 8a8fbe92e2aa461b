"""Gathering a session's synthesized audio from the bus (for `voxbus say`, `voxbus demo`)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

import soundfile as sf

from voxbus.audio import WAV_SUBTYPES, pcm_samples
from voxbus.bus import Bus
from voxbus.messages import codec
from voxbus.messages.audio import AudioFormat, SpeechChunk
from voxbus.messages.control import SessionError



@dataclass
class SpeechTurn:
    chunks: list[bytes] = field(default_factory=list)
    format: AudioFormat | None = None
    sentences: list[str] = field(default_factory=list)
    first_chunk_at: float = 0.0  # monotonic
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def pcm(self) -> bytes:
        return b"".join(self.chunks)

    @property
    def duration(self) -> float:
        return self.format.duration(len(self.pcm)) if self.format else 0.0

    def write_wav(self, path: str | Path) -> Path:
        if self.format is None:
            raise ValueError("no audio arrived")
        fmt = self.format
        sf.write(str(path), pcm_samples(self.pcm, fmt), fmt.rate, subtype=WAV_SUBTYPES[fmt.sample], format="WAV")
        return Path(path)


class SpeechCollector:
    """``async with SpeechCollector(bus, sid) as speech: ...; await speech.turn(0).done.wait()``"""

    def __init__(self, bus: Bus, session: str) -> None:
        self.bus = bus
        self.session = session
        self.turns: dict[int, SpeechTurn] = {}
        self.errors: list[SessionError] = []  # what the services reported about this session meanwhile
        self._subs: list = []

    def turn(self, n: int) -> SpeechTurn:
        return self.turns.setdefault(n, SpeechTurn())

    async def __aenter__(self) -> "SpeechCollector":
        s = self.bus.subjects
        self._subs = [await self.bus.nc.subscribe(s.audio_out(self.session), cb=self._on_chunk),
                      await self.bus.nc.subscribe(s.control(self.session, "error"), cb=self._on_error)]
        return self

    async def __aexit__(self, *exc) -> None:
        for sub in self._subs:
            await sub.unsubscribe()

    async def _on_error(self, msg) -> None:
        try:
            self.errors.append(codec.decode(msg.data, SessionError))
        except Exception:
            pass

    async def _on_chunk(self, msg) -> None:
        head = codec.decode_meta(msg.headers, SpeechChunk)
        turn = self.turn(head.turn)
        if msg.data:
            turn.first_chunk_at = turn.first_chunk_at or time.monotonic()
            turn.format = turn.format or head.format
            turn.chunks.append(bytes(msg.data))
        if head.text:
            turn.sentences.append(head.text)
        if head.final:
            turn.done.set()
