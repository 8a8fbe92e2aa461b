"""Audio into the bus: decode files, cut PCM into frames and publish them to a session.

    async with open_bus(config) as bus:
        pub = SessionPublisher(bus, "call-1", realtime=True)
        await pub.publish_blocks(microphone_blocks(), AudioFormat(rate=48000, channels=1))

Frames go out through JetStream async publish with a bounded window: the bus gets them as fast
as it takes them without a round trip per frame, and a full window pushes back on the source.
Every PubAck is checked before the session's end event goes out, so a session that reports
success had every frame stored.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from pathlib import Path
from typing import AsyncIterable, Callable

import numpy as np
import soundfile as sf

from voxbus.audio import encode_pcm, frame_bytes
from voxbus.bus import Bus
from voxbus.errors import AudioFileError, ServerError
from voxbus.messages import codec
from voxbus.messages.audio import AudioFormat, AudioFrame
from voxbus.messages.control import SessionEnd, SessionStart

# libsndfile subtype -> (numpy dtype to read as, wire sample type): keep integer audio integer.
_SUBTYPES = {"FLOAT": ("float32", "f32le"), "DOUBLE": ("float32", "f32le"),
             "PCM_24": ("int32", "s32le"), "PCM_32": ("int32", "s32le")}
ACK_TIMEOUT_S = 30.0


def read_audio(path: str | Path) -> tuple[bytes, AudioFormat]:
    """Any format libsndfile reads (wav, flac, ogg/vorbis/opus, mp3...) -> (PCM bytes, format)."""
    path = Path(path)
    if not path.is_file():
        raise AudioFileError(f"{path}: no such file")
    try:
        info = sf.info(str(path))
        dtype, sample = _SUBTYPES.get(info.subtype, ("int16", "s16le"))
        data, rate = sf.read(str(path), dtype=dtype, always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise AudioFileError(f"{path}: cannot decode audio ({exc})") from None
    if len(data) == 0:
        raise AudioFileError(f"{path}: the file holds no audio")
    if data.shape[1] > 8:
        raise AudioFileError(f"{path}: {data.shape[1]} channels; voxbus takes at most 8")
    return np.ascontiguousarray(data).astype(data.dtype.newbyteorder("<")).tobytes(), \
        AudioFormat(rate=int(rate), channels=data.shape[1], sample=sample)


class SessionPublisher:
    """Publishes one session: start event, numbered frames, end event carrying the last seq."""

    def __init__(self, bus: Bus, session: str, *, realtime: bool = False, frame_ms: int | None = None,
                 window: int | None = None, meta: dict[str, str] | None = None,
                 on_frame: Callable[[int, float], None] | None = None, output: AudioFormat | None = None,
                 voice: str | None = None, assistant: bool | None = None) -> None:
        self.bus = bus
        self.session = session
        self.subject = bus.subjects.audio_in(session)  # validates the session id up front
        self.realtime = realtime
        self.frame_ms = frame_ms or bus.config.ingest.frame_ms
        self.window = window or bus.config.ingest.window
        self.meta = meta or {}
        self.output, self.voice = output, voice  # what the session wants its speech replies as
        self.assistant = assistant  # whether the assistant should answer it (None: the deployment's default)
        self.on_frame = on_frame  # progress: (frames sent, seconds of audio sent)
        self.js = bus.nc.jetstream(publish_async_max_pending=self.window)
        self.seq = 0
        self.offset = 0.0  # session time of the next frame
        self._inflight: deque[asyncio.Future] = deque()
        self._clock: float | None = None
        self._started = False
        self._rest = b""  # a partial frame carried to the next block

    async def start(self, fmt: AudioFormat | None = None) -> None:
        if not self._started:
            self._started = True
            event = SessionStart(session=self.session, ts=time.time(), format=fmt, meta=self.meta,
                                 output=self.output, voice=self.voice, assistant=self.assistant)
            await self._store(self.bus.subjects.control(self.session, "start"), codec.encode(event), "start")

    async def send(self, pcm: bytes, fmt: AudioFormat) -> None:
        """Publish a block of PCM (any length) as whole frames; a partial frame waits for more."""
        await self.start(fmt)
        size = frame_bytes(fmt, self.frame_ms)
        data = self._rest + pcm
        whole = len(data) - len(data) % size
        for i in range(0, whole, size):
            await self._frame(data[i:i + size], fmt)
        self._rest = data[whole:]
        self._rest_format = fmt

    async def _frame(self, chunk: bytes, fmt: AudioFormat) -> None:
        if self.realtime:  # pace to the audio clock, not to the previous frame: no drift
            now = time.monotonic()
            if self._clock is None:
                self._clock = now - self.offset
            ahead = self._clock + self.offset - now
            if ahead > 0:
                await asyncio.sleep(ahead)
        head = AudioFrame(format=fmt, seq=self.seq, ts=time.time(), offset=round(self.offset, 6))
        self._inflight.append(await self.js.publish_async(self.subject, chunk, headers=codec.meta_headers(head)))
        while self._inflight and self._inflight[0].done():
            self._check(self._inflight.popleft())
        self.seq += 1
        self.offset += fmt.duration(len(chunk))
        if self.on_frame:
            self.on_frame(self.seq, self.offset)

    def _check(self, fut: asyncio.Future) -> None:
        exc = fut.exception()
        if exc is not None:
            raise ServerError(f"session {self.session}: a frame was not stored: {exc}")

    async def end(self, reason: str = "eos") -> int:
        """Flush the last partial frame, wait until every frame is stored, then publish the end
        event. Returns how many frames were published."""
        if self._rest:
            await self._frame(self._rest, self._rest_format)
            self._rest = b""
        pending = list(self._inflight)
        self._inflight.clear()
        if pending:
            done, not_done = await asyncio.wait(pending, timeout=ACK_TIMEOUT_S)
            if not_done:
                raise ServerError(f"session {self.session}: {len(not_done)} frames unacknowledged after {ACK_TIMEOUT_S:g}s")
            for fut in done:
                self._check(fut)
        event = SessionEnd(session=self.session, ts=time.time(), reason=reason,
                           last_seq=self.seq - 1 if self.seq else None)
        await self.start()
        await self._store(self.bus.subjects.control(self.session, "end"), codec.encode(event), "end")
        return self.seq

    async def _store(self, subject: str, data: bytes, event: str) -> None:
        try:  # a retried publish of the same event is stored once
            await self.bus.js.publish(subject, data, headers={"Nats-Msg-Id": f"{self.session}:{event}"})
        except Exception as exc:
            raise ServerError(f"session {self.session}: cannot publish to {subject}: {exc}") from None

    async def publish_blocks(self, blocks: AsyncIterable[bytes | np.ndarray], fmt: AudioFormat) -> int:
        """The live-source API: PCM blocks (bytes in `fmt`, or float arrays in [-1, 1] shaped
        (samples,) or (samples, channels)) in, frames out, then the end event."""
        async for block in blocks:
            if isinstance(block, np.ndarray):
                audio = block.reshape(-1, 1) if block.ndim == 1 else block
                if audio.shape[1] != fmt.channels:
                    raise ValueError(f"a block has {audio.shape[1]} channels; the format says {fmt.channels}")
                block = encode_pcm(audio, fmt)
            await self.send(block, fmt)
        return await self.end()

    async def publish_pcm(self, pcm: bytes, fmt: AudioFormat) -> int:
        await self.send(pcm, fmt)
        return await self.end()

