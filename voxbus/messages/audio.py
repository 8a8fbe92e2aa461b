"""Audio on the wire: the payload is raw PCM; these Structs travel JSON-encoded in the
``Vox-Meta`` header, so any single frame of a replay decodes on its own."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct

SampleType = Literal["s16le", "s32le", "f32le"]
SAMPLE_WIDTH: dict[str, int] = {"s16le": 2, "s32le": 4, "f32le": 4}

Rate = Annotated[int, Meta(ge=1000, le=384000, description="samples per second per channel")]
Channels = Annotated[int, Meta(ge=1, le=8, description="interleaved channels")]
NonNegInt = Annotated[int, Meta(ge=0)]


class AudioFormat(Struct, frozen=True, kw_only=True):
    """How to read the PCM bytes of a payload: little-endian, channels interleaved."""

    rate: Rate = 16000
    channels: Channels = 1
    sample: SampleType = "s16le"

    @property
    def frame_bytes(self) -> int:
        """Bytes of one sample across all channels: a payload's length is a multiple of this."""
        return SAMPLE_WIDTH[self.sample] * self.channels

    def duration(self, nbytes: int) -> float:
        return nbytes / (self.frame_bytes * self.rate)


class AudioFrame(Struct, kw_only=True):
    """Header of one client audio frame on ``{p}.audio.<sid>.in``. Payload: raw PCM."""

    format: AudioFormat
    seq: NonNegInt = msgspec.field(default=0)
    """Frame number in the session, from 0, no gaps."""
    ts: float = 0.0
    """Capture time of the frame's first sample, Unix seconds (0 when unknown)."""
    offset: Annotated[float, Meta(ge=0)] | None = None
    """Session time of the frame's first sample, seconds from the session's first frame. Lets a
    consumer that resumes mid-session (after a restart) keep transcript times exact; None: the
    consumer estimates it from ``seq`` and the frame's duration."""


class SpeechChunk(Struct, kw_only=True):
    """Header of one synthesized audio chunk on ``{p}.audio.<sid>.out``. Payload: raw PCM."""

    format: AudioFormat
    seq: NonNegInt
    """Chunk number within the session's output, from 0."""
    turn: NonNegInt = 0
    """Which reply or say request this audio belongs to."""
    text: str = ""
    """The sentence this chunk speaks (on its first chunk)."""
    final: bool = False
    """True on the last chunk of a turn (its payload may be empty)."""
