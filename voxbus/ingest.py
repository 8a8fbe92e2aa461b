"""Audio into the bus: decode files, cut PCM into frames and publish them to a session.

    async with open_bus(config) as bus:
        pub = SessionPublisher(bus, "call-1", realtime=True)
        await pub.publish_blocks(microphone_blocks(), AudioFormat(rate=48000, channels=1))

Frames go out through JetStream async publish with a bounded window: the bus gets them as fast
as it takes them without a round trip per frame, and a full window pushes back on the source.
A frame the bus did not store (a broker restart) is sent again (`voxbus/reliable_publish.py`).
Every PubAck is checked before the session's end event goes out, so a session that reports
success had every frame stored; one that could not store some says how many, after its end
event went out all the same.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import AsyncIterable, Callable

import numpy as np
import soundfile as sf

from voxbus.audio import encode_pcm, frame_bytes
from voxbus.bus import Bus
from voxbus.errors import AudioFileError, FramesNotStored, InvalidSessionId, ServerError
from voxbus.messages import codec
from voxbus.messages.audio import AudioFormat, AudioFrame
from voxbus.messages.control import SessionEnd, SessionStart
from voxbus.reliable_publish import FramePublisher, store
from voxbus.streams import DUPLICATE_WINDOW_S

# libsndfile subtype -> (numpy dtype to read as, wire sample type): keep integer audio integer.
_SUBTYPES = {"FLOAT": ("float32", "f32le"), "DOUBLE": ("float32", "f32le"),
             "PCM_24": ("int32", "s32le"), "PCM_32": ("int32", "s32le")}


def read_audio(path: str | Path) -> tuple[bytes, AudioFormat]:
    """Any format libsndfile reads (wav, flac, ogg/vorbis/opus, mp3...) -> (PCM bytes, format)."""
    path = Path(path)
    if not path.is_file():
        raise AudioFileError(f"{path}: no such file")
    return decode_audio(str(path), str(path))


def decode_audio(source, name: str) -> tuple[bytes, AudioFormat]:
    """A file path or a binary file object (an upload: io.BytesIO) -> (PCM bytes, format)."""
    try:
        info = sf.info(source)
        if hasattr(source, "seek"):
            source.seek(0)
        dtype, sample = _SUBTYPES.get(info.subtype, ("int16", "s16le"))
        data, rate = sf.read(source, dtype=dtype, always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise AudioFileError(f"{name}: cannot decode audio ({exc})") from None
    if len(data) == 0:
        raise AudioFileError(f"{name}: the file holds no audio")
    if data.shape[1] > 8:
        raise AudioFileError(f"{name}: {data.shape[1]} channels; voxbus takes at most 8")
    return np.ascontiguousarray(data).astype(data.dtype.newbyteorder("<")).tobytes(), \
        AudioFormat(rate=int(rate), channels=data.shape[1], sample=sample)


class SessionPublisher:
    """Publishes one session: start event, numbered frames, end event carrying the last seq."""

    def __init__(self, bus: Bus, session: str, *, realtime: bool = False, frame_ms: int | None = None,
                 window: int | None = None, meta: dict[str, str] | None = None,
                 on_frame: Callable[[int, float], None] | None = None, output: AudioFormat | None = None,
                 voice: str | None = None, assistant: bool | None = None, partials: bool | None = None) -> None:
        self.bus = bus
        self.session = session
        self.subject = bus.subjects.audio_in(session)  # validates the session id up front
        self.realtime = realtime
        self.frame_ms = frame_ms or bus.config.ingest.frame_ms
        self.window = window or bus.config.ingest.window
        self.meta = meta or {}
        self.output, self.voice = output, voice  # what the session wants its speech replies as
        self.assistant = assistant  # whether the assistant should answer it (None: the deployment's default)
        self.partials = partials  # whether the STT should send interim transcripts (None: stt.partials)
        self.on_frame = on_frame  # progress: (frames sent, seconds of audio sent)
        ingest = bus.config.ingest
        self.ack_timeout, self.retry_window = float(ingest.ack_timeout), float(ingest.retry_window)
        self.frames = FramePublisher(bus.nc, self.subject, window=self.window, ack_timeout=self.ack_timeout,
                                     retry_window=self.retry_window)
        self.seq = 0
        self.offset = 0.0  # session time of the next frame
        self._clock: float | None = None
        self._started = False
        self._rest = b""  # a partial frame carried to the next block

    async def start(self, fmt: AudioFormat | None = None) -> None:
        if not self._started:
            self._started = True
            event = SessionStart(session=self.session, ts=time.time(), format=fmt, meta=self.meta,
                                 output=self.output, voice=self.voice, assistant=self.assistant,
                                 partials=self.partials)
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
        headers = codec.meta_headers(head)
        headers["Nats-Msg-Id"] = f"{self.session}:f{self.seq}"  # a frame sent again is stored once
        await self.frames.send(self.seq, chunk, headers)
        self.seq += 1
        self.offset += fmt.duration(len(chunk))
        if self.on_frame:
            self.on_frame(self.seq, self.offset)

    async def end(self, reason: str = "eos") -> int:
        """Flush the last partial frame, wait until every frame is stored (or counted lost), then
        publish the end event. Returns how many frames were published; raises FramesNotStored,
        after the end event, if some never were."""
        if self._rest:
            await self._frame(self._rest, self._rest_format)
            self._rest = b""
        await self.frames.flush()
        event = SessionEnd(session=self.session, ts=time.time(), reason=reason,
                           last_seq=self.seq - 1 if self.seq else None)
        await self.start()
        await self._store(self.bus.subjects.control(self.session, "end"), codec.encode(event), "end")
        lost = self.frames.lost
        if lost:
            raise FramesNotStored(
                f"session {self.session}: {len(lost)} of {self.seq} frames could not be stored within "
                f"{self.retry_window:g} s ({_ranges(lost)}); the end event went out, so the STT service "
                f"reports them missing", lost=list(lost), sent=self.seq)
        return self.seq

    async def _store(self, subject: str, data: bytes, event: str) -> None:
        # A retried publish of the same event is stored once.
        stored = await store(self.bus.nc, self.bus.js, subject, data, {"Nats-Msg-Id": f"{self.session}:{event}"},
                             until=time.monotonic() + self.retry_window, timeout=self.ack_timeout)
        if stored is None:
            raise ServerError(f"session {self.session}: the {event} event could not be stored on {subject} "
                              f"within {self.retry_window:g} s")
        ack, tries = stored
        if event == "start" and ack.duplicate and tries == 1:
            raise InvalidSessionId(
                f"session {self.session} was already started in the last {DUPLICATE_WINDOW_S / 60:g} minutes; a "
                f"session id is used once (its frames would be dropped as copies): publish as a new session")

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



def _ranges(seqs: list[int]) -> str:
    """[3, 4, 5, 9] -> 'frames 3-5, 9'."""
    parts, start = [], None
    for i, s in enumerate(seqs):
        if start is None:
            start = s
        if i + 1 == len(seqs) or seqs[i + 1] != s + 1:
            parts.append(f"{start}" if start == s else f"{start}-{s}")
            start = None
    return "frames " + ", ".join(parts)
