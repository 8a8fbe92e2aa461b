"""Replaying a recorded session from the streams: its audio frames, transcripts and control
events merged on one session clock, filtered by time or frame sequence, optionally paced as
they originally happened, and its audio rebuilt as a WAV file.

Reads go through ephemeral consumers (history.py), so live services are not disturbed.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

import msgspec
import numpy as np
import soundfile as sf

from voxbus.audio import WAV_SUBTYPES, float_to_pcm, pcm_samples, pcm_to_float, to_mono
from voxbus.bus import Bus
from voxbus.history import stored
from voxbus.messages import codec
from voxbus.messages.audio import AudioFormat, AudioFrame
from voxbus.messages.control import ControlEvent
from voxbus.messages.text import Transcript



@dataclass
class ReplayEvent:
    t: float  # session time, seconds
    kind: str  # "audio" | "transcript" | "control"
    subject: str
    body: Any  # AudioFrame | Transcript | ControlEvent
    payload: bytes = b""

    def as_json(self) -> dict:
        out: dict[str, Any] = {"t": round(self.t, 3), "type": self.kind, "subject": self.subject}
        if self.kind == "audio":
            out.update(seq=self.body.seq, offset=self.body.offset, bytes=len(self.payload),
                       format=msgspec.to_builtins(self.body.format))
        else:
            out.update(msgspec.to_builtins(self.body))
        return out


@dataclass
class Replay:
    session: str
    events: list[ReplayEvent] = field(default_factory=list)
    frames: int = 0
    audio_s: float = 0.0


@dataclass
class Window:
    since: float | None = None
    until: float | None = None
    from_seq: int | None = None

    def keeps_frame(self, t: float, seq: int) -> bool:
        return ((self.since is None or t >= self.since) and (self.until is None or t < self.until)
                and (self.from_seq is None or seq >= self.from_seq))

    def keeps_span(self, start: float, end: float) -> bool:
        return (self.since is None or end >= self.since) and (self.until is None or start <= self.until)


async def load_session(bus: Bus, session: str, window: Window) -> Replay:
    s = bus.subjects
    replay = Replay(session)
    wall_zero: float | None = None  # wall-clock time of session time 0 (from the first frame)
    position = 0.0
    async for msg in stored(bus.js, s.stream("audio"), s.audio_in(session)):
        head = codec.decode_meta(msg.headers, AudioFrame)
        t = head.offset if head.offset is not None else position
        position = t + head.format.duration(len(msg.data)) if msg.data else t
        if wall_zero is None and head.ts > 0:
            wall_zero = head.ts - t
        if window.keeps_frame(t, head.seq):
            replay.events.append(ReplayEvent(t, "audio", msg.subject, head, bytes(msg.data)))
            replay.frames += 1
            replay.audio_s += head.format.duration(len(msg.data)) if msg.data else 0.0
    async for msg in stored(bus.js, s.stream("text"), s.transcript(session)):
        tr = codec.decode(msg.data, Transcript)
        if window.keeps_span(tr.start, tr.end):
            replay.events.append(ReplayEvent(tr.end, "transcript", msg.subject, tr))
    async for msg in stored(bus.js, s.stream("ctl"), s.session_control(session)):
        ev = codec.decode(msg.data, ControlEvent)
        t = max(ev.ts - wall_zero, 0.0) if wall_zero is not None and ev.ts else 0.0
        if window.keeps_span(t, t):
            replay.events.append(ReplayEvent(t, "control", msg.subject, ev))
    order = {"control": 0, "audio": 1, "transcript": 2}
    replay.events.sort(key=lambda e: (e.t, order[e.kind]))
    return replay


async def paced(events: list[ReplayEvent], original: bool) -> AsyncIterator[ReplayEvent]:
    """Yield events at once, or spaced as they happened (session clock -> wall clock)."""
    start = time.monotonic()
    t0 = events[0].t if events else 0.0
    for ev in events:
        if original:
            delay = start + (ev.t - t0) - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        yield ev


def write_wav(replay: Replay, path, *, aligned: bool = False) -> tuple[int, AudioFormat] | None:
    """The replayed frames as one WAV (to a path or a binary file object) in the first frame's
    format (samples exactly as published; frames in another format are converted to it). With
    `aligned`, a gap in session time (frames lost or expired) is filled with silence, so the
    file's time is session time, as word timings are. Returns (frames written, format)."""
    frames = [e for e in replay.events if e.kind == "audio"]
    if not frames:
        return None
    fmt: AudioFormat = frames[0].body.format
    target = path if hasattr(path, "write") else str(path)
    with sf.SoundFile(target, "w", samplerate=fmt.rate, channels=fmt.channels, subtype=WAV_SUBTYPES[fmt.sample],
                      format="WAV") as out:
        written = 0  # (samples so far; aligned: from session time 0, even if the first frames expired)
        for e in sorted(frames, key=lambda e: e.body.seq):
            pcm = e.payload if e.body.format == fmt else _convert(e.payload, e.body.format, fmt)
            if not pcm:
                continue
            samples = pcm_samples(pcm, fmt)
            gap = round(e.t * fmt.rate) - written if aligned else 0
            if gap > fmt.rate // 100:  # (over 10 ms: a real gap, not rounding)
                out.write(np.zeros((gap, *samples.shape[1:]), dtype=samples.dtype))
                written += gap
            out.write(samples)
            written += len(samples)
    return len(frames), fmt


def _convert(pcm: bytes, src: AudioFormat, dst: AudioFormat) -> bytes:
    if not pcm:
        return b""
    return float_to_pcm(to_mono(pcm_to_float(pcm, src)), src.rate, dst)
