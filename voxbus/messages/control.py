"""Session control events on ``{p}.ctl.<sid>.<event>``; the ``type`` field tells them apart."""

from __future__ import annotations

from typing import Annotated, Union

from msgspec import Meta, Struct

from voxbus.messages.audio import AudioFormat, NonNegInt


class _Control(Struct, tag_field="type", kw_only=True):
    session: str
    ts: float = 0.0
    """When the event happened, Unix seconds."""


class SessionStart(_Control, tag="start"):
    format: AudioFormat | None = None
    """Format of the audio the client will send."""
    meta: dict[str, str] = {}
    """Free-form labels (file name, language hint...)."""
    output: AudioFormat | None = None
    """Format the client wants synthesized speech in; None: each voice's own."""
    voice: str | None = None
    """TTS model id (or model:speaker) for this session's speech; None: the configured default."""
    assistant: bool | None = None
    """Whether the assistant answers this session's transcripts; None: ``assistant.answer_by_default``
    (false as shipped: a transcription-only client gets transcripts and no replies)."""
    partials: bool | None = None
    """Whether the STT publishes interim transcripts of this session (PartialTranscript); None:
    ``stt.partials``."""
    partial_interval: Annotated[float, Meta(ge=0.1, le=60)] | None = None
    """Seconds of speech between two interim transcripts; None: ``stt.partial_interval``."""


class SessionEnd(_Control, tag="end"):
    reason: str = "eos"
    last_seq: int | None = None
    """Sequence number of the session's last audio frame, so a consumer knows when it has all."""


class Interrupt(_Control, tag="interrupt"):
    reason: str = ""


class SessionError(_Control, tag="error"):
    """Something about this session's input was wrong; other sessions are unaffected."""

    code: str
    """One of the session error codes (docs/protocol.md, *Session errors*)."""
    message: str
    """What was wrong, for a person; it does not repeat the code."""
    seq: NonNegInt | None = None
    """The frame's own `seq` when the error is about one frame whose header decoded (for an
    utterance: its first frame)."""


class SessionTranscribed(_Control, tag="transcribed"):
    """Published by the STT service once every transcript of an ended session is stored."""

    utterances: NonNegInt
    """How many transcripts the session has (utterance indexes 0 .. utterances-1)."""
    last_seq: int | None = None
    frames_missing: NonNegInt = 0
    """Frames up to `last_seq` the service never had (each range also reported as a
    `frames_missing` error): 0 means the transcripts cover every frame; more, that they cannot."""


ControlEvent = Union[SessionStart, SessionEnd, Interrupt, SessionError, SessionTranscribed]
