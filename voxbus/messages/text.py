"""Text on the wire: transcripts, assistant reply chunks and text to speak."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct

from voxbus.messages.audio import AudioFormat, NonNegInt

Seconds = Annotated[float, Meta(ge=0)]


class ModelRef(Struct, kw_only=True):
    """Which model produced a result: replies carry it so results are traceable."""

    id: str
    version: str = ""
    fingerprint: str = ""
    """Content hash of the model files (first 16 hex digits of SHA-256)."""
    backend: str = ""


class Word(Struct, kw_only=True):
    """One word and when it was said (Whisper's cross-attention aligned to the text)."""

    word: str
    """The word as written, its punctuation attached."""
    start: Seconds
    """In a Transcript: session time; in a TranscribeReply: seconds from the audio's start."""
    end: Seconds
    probability: Annotated[float, Meta(ge=0, le=1)] = 0.0
    """The model's mean token probability for the word."""


class Segment(Struct, kw_only=True):
    start: Seconds
    end: Seconds
    text: str


class Timings(Struct, kw_only=True):
    """Milliseconds spent waiting in the manager's queue, in the model, and end to end."""

    queue_ms: float = 0.0
    inference_ms: float = 0.0
    total_ms: float = 0.0


class Transcript(Struct, kw_only=True):
    """One utterance's transcript on ``{p}.text.<sid>.transcript``.

    Published with ``Nats-Msg-Id: <sid>:<utterance>`` so a redelivery never duplicates it."""

    session: str
    utterance: NonNegInt
    text: str
    start: Seconds
    """Start of the utterance in session time (seconds from the session's first frame)."""
    end: Seconds
    segments: list[Segment] = []
    words: list[Word] = []
    """Every word of the utterance in session time, when the STT asks for them (`stt.words`)."""
    language: str = ""
    model: ModelRef | None = None
    timings: Timings = msgspec.field(default_factory=Timings)
    first_seq: NonNegInt = 0
    """First and last audio frame sequence numbers the utterance covers."""
    last_seq: NonNegInt = 0


class PartialTranscript(Struct, kw_only=True):
    """An interim hypothesis of the utterance being spoken, on ``{p}.text.<sid>.partial``.

    Published while the utterance is open, each covering all of its audio heard so far; the
    utterance's Transcript (same `utterance` index) supersedes them. Not deduplicated: a partial
    lost or repeated changes nothing, and none is published after its utterance's final."""

    session: str
    utterance: NonNegInt
    """The index the utterance's final Transcript will have."""
    revision: NonNegInt
    """0, 1, 2...: this utterance's partials in the order they were made."""
    text: str
    """The whole hypothesis so far."""
    stable: str = ""
    """The leading words of `text` that no later partial of this utterance changes (two
    hypotheses in a row agreed on them: local agreement). Never shorter than the previous one's."""
    start: Seconds
    """Start of the utterance in session time."""
    end: Seconds
    """End of the audio this hypothesis heard, in session time."""
    closing: bool = False
    """Made of exactly the audio the utterance's final will have if it ends here (the speaker
    paused): what a client, or the assistant, may act on early."""
    hypothesis: str = ""
    """With `closing`: the decode exactly as the final would say it (`text` keeps the stable
    words as first written, so it may differ in case or punctuation)."""
    model: ModelRef | None = None


class ReplyChunk(Struct, kw_only=True):
    """A piece of the assistant's streamed reply on ``{p}.text.<sid>.reply``."""

    session: str
    turn: NonNegInt
    index: NonNegInt
    text: str
    final: bool = False


class SayRequest(Struct, kw_only=True):
    """Text to speak for a session, on ``{p}.tts.<sid>.say``."""

    text: str
    turn: NonNegInt = 0
    """Which turn of the session this text belongs to, numbered by its sender: the assistant
    counts its replies 0, 1, 2...; a client that only says things may keep 0. Pieces of one turn
    are spoken in order, and its final piece ends the turn's audio (a `final` SpeechChunk)."""
    voice: str | None = None
    """A TTS model id (or voice within it); None: the configured default."""
    format: AudioFormat | None = None
    """Output format wanted; None: the voice's own."""
    final: bool = True
    """False while more text of the same turn will follow (streamed replies)."""
    speak_now: bool = False
    """Speak the turn's text so far at once, even mid-sentence (a reply's first words, so its
    first audio starts before its first clause is complete)."""
    held: bool = False
    """A reply started before its turn was sure (the assistant speculating): synthesize this
    turn's text from here on, but publish its audio only once a `release` comes."""
    settle: Literal["release", "discard"] | None = None
    """For a held turn: `release` publishes its held audio at once and speaks the rest of it as
    usual; `discard` drops it, and the turn number may be used again."""
