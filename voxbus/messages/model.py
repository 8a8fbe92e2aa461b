"""ModelManager request-reply messages (``{p}.model.<kind>.<verb>``).

Requests that carry audio (transcribe) put the PCM in the payload and the request Struct,
JSON-encoded, in the ``Vox-Meta`` header; so do synthesize replies. Everything else is a JSON
body. Errors come back with ``Nats-Service-Error-Code`` (numeric status) and
``Nats-Service-Error`` (message) headers and an ``ErrorReply`` body.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

import msgspec
from msgspec import Meta, Struct

from voxbus.messages.admin import ModelState
from voxbus.messages.audio import AudioFormat, NonNegInt
from voxbus.messages.text import ModelRef, Segment, Timings, Word

ModelKind = Literal["llm", "stt", "tts"]


class _ModelRequest(Struct, kw_only=True):
    model: str | None = None
    """Model id; None routes to the configured default for this endpoint's task."""
    version: str | None = None
    """Pin a version: the request fails with ``version_mismatch`` if the model's differs."""


# -- speech to text -------------------------------------------------------------------------
class TranscribeRequest(_ModelRequest):
    """Header of a transcribe request; the payload is the utterance's raw PCM."""

    format: AudioFormat
    language: str | None = None
    """ISO code; None lets the model detect it (English-only models ignore it)."""
    beam_size: Annotated[int, Meta(ge=1, le=10)] = 1
    words: bool = False
    """Word timings in the reply (`words`): one more pass of the decoder over the text."""
    session: str | None = None
    """For logs and batching stats only."""
    interim: bool = False
    """An interim hypothesis (a partial): batched after every waiting final, so it never delays one."""
    upload: str | None = None
    """Audio too large for one message (over the server's ``max_payload``) is put in the uploads
    Object Store bucket (``<PREFIX>_UPLOADS``) and named here; the payload is then empty. The
    sender deletes the object when its call (with any retries) ends; the manager only reads it."""


class TranscribeReply(Struct, kw_only=True):
    model: ModelRef
    text: str
    segments: list[Segment] = []
    words: list[Word] = []
    """When the request asked for them: every word, in seconds from the audio's start."""
    language: str = ""
    duration: float = 0.0
    """Seconds of audio transcribed."""
    timings: Timings = msgspec.field(default_factory=Timings)
    batch_size: int = 1
    """How many requests ran in the same batch as this one."""


# -- text generation -------------------------------------------------------------------------
class ChatMessage(Struct, kw_only=True):
    role: Literal["system", "user", "assistant"]
    content: str


class SamplingOptions(Struct, kw_only=True):
    max_tokens: Annotated[int, Meta(ge=1, le=8192)] = 256
    temperature: Annotated[float, Meta(ge=0.0, le=5.0)] = 0.8
    """0 is greedy decoding."""
    top_p: Annotated[float, Meta(gt=0.0, le=1.0)] = 0.95
    top_k: Annotated[int, Meta(ge=0, le=1000)] = 40
    repeat_penalty: Annotated[float, Meta(ge=0.5, le=3.0)] = 1.1
    seed: int | None = None
    stop: list[str] = []


class GenerateRequest(_ModelRequest):
    """Either ``prompt`` (raw completion) or ``messages`` (chat, using the GGUF's template)."""

    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    conversation: str | None = None
    """Conversation id: the manager keeps its KV state so the next turn evaluates only new tokens."""
    options: SamplingOptions = msgspec.field(default_factory=SamplingOptions)
    session: str | None = None
    """Session this generation speaks for: an interrupt event on that session stops it."""
    request_id: str | None = None
    """Lets the caller stop this generation with a GenerateCancel (e.g. when it stops listening)."""


class GenerateCancel(Struct, kw_only=True):
    """On ``{p}.model.llm.cancel`` (every manager listens): stop a running generation."""

    request_id: str


class Usage(Struct, kw_only=True):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    """Prompt tokens whose KV state was reused rather than evaluated."""


class GenerateTimings(Struct, kw_only=True):
    queue_ms: float = 0.0
    ttft_ms: float = 0.0
    """Time to first token, from the manager receiving the request."""
    total_ms: float = 0.0
    tokens_per_s: float = 0.0


class _GenerateEvent(Struct, tag_field="type", kw_only=True):
    pass


class GenerateChunk(_GenerateEvent, tag="chunk"):
    """Streamed to the request's reply inbox as text is produced."""

    index: NonNegInt
    text: str


class GenerateDone(_GenerateEvent, tag="done"):
    """The last message of a generate stream."""

    model: ModelRef
    text: str
    finish_reason: Literal["stop", "length", "cancelled"]
    usage: Usage = msgspec.field(default_factory=Usage)
    timings: GenerateTimings = msgspec.field(default_factory=GenerateTimings)


GenerateEvent = Union[GenerateChunk, GenerateDone]


# -- text to speech ----------------------------------------------------------------------------
class SynthesizeRequest(_ModelRequest):
    text: Annotated[str, Meta(min_length=1, max_length=20000)]
    voice: str | None = None
    """Speaker within a multi-speaker model."""
    format: AudioFormat | None = None
    """Output format wanted; None: the model's own rate, mono s16le."""
    speed: Annotated[float, Meta(gt=0.25, le=4.0)] = 1.0


class SynthesizeReply(Struct, kw_only=True):
    """Header of a synthesize reply; the payload is raw PCM in ``format``. Speech larger than
    one message (the server's ``max_payload``) comes as ``parts`` messages in order, each with
    this header and the next whole frames of PCM: concatenate the payloads."""

    model: ModelRef
    format: AudioFormat
    duration: float
    """Seconds of the whole speech (all parts)."""
    timings: Timings = msgspec.field(default_factory=Timings)
    part: NonNegInt = 0
    parts: Annotated[int, Meta(ge=1)] = 1


# -- admin -------------------------------------------------------------------------------------
class Histogram(Struct, kw_only=True):
    """Latencies since the manager started, in Prometheus's shape: `counts[i]` requests took at
    most `bounds[i]` seconds (cumulative); `count` is all of them, `sum` their seconds."""

    bounds: list[float]
    counts: list[NonNegInt]
    count: NonNegInt = 0
    sum: float = 0.0


class ModelMetrics(Struct, kw_only=True):
    requests: int = 0
    errors: int = 0
    queue_ms_p50: float = 0.0
    inference_ms_p50: float = 0.0
    inference_ms_p95: float = 0.0
    tokens_per_s: float = 0.0
    """LLMs: mean decode speed of recent requests."""
    real_time_factor: float = 0.0
    """STT/TTS: seconds of compute per second of audio (lower is faster)."""
    load_ms: float = 0.0
    errors_by_code: dict[str, int] = {}
    """The failed requests by error code (`overloaded`, `model_crashed`, ...)."""
    queue_seconds: Histogram | None = None
    """How long requests waited before they started."""
    inference_seconds: Histogram | None = None
    """How long they ran (a batch's time shared by its requests)."""


class WorkerInfo(Struct, kw_only=True):
    """One worker process of a loaded model (a model runs as ``instances`` of them)."""

    index: int
    pid: int
    state: Literal["starting", "idle", "busy", "stopping"]
    rss_bytes: int = 0
    vram_bytes: int = 0
    queue: int = 0
    """Requests running on or waiting for this worker in particular (its conversations)."""
    jobs: int = 0
    """Jobs it has run since it started."""
    crashes: int = 0
    """Crashes of this instance within the quarantine window."""


class ModelInfo(Struct, kw_only=True):
    id: str
    kind: ModelKind
    backend: str
    version: str = ""
    fingerprint: str = ""
    state: ModelState = "unloaded"
    pinned: bool = False
    priority: int = 0
    quantization: str = ""
    ram_bytes: int = 0
    vram_bytes: int = 0
    default_for: bool = False
    """True when it is the default model of its task."""
    idle_s: float = 0.0
    metrics: ModelMetrics = msgspec.field(default_factory=ModelMetrics)
    instances: int = 1
    """Worker processes this model runs as when loaded (``instances`` in its config)."""
    queue: int = 0
    """Requests admitted and not yet started."""
    max_queue: int = 0
    """Waiting requests beyond which new ones get ``overloaded``."""
    crashes: int = 0
    """Worker crashes within the quarantine window."""
    error: str = ""
    """Why the model is ``failed``, ``crashed`` or ``quarantined``."""
    workers: list[WorkerInfo] = []


class ListModelsRequest(Struct, kw_only=True):
    kind: ModelKind | None = None


class ListModelsReply(Struct, kw_only=True):
    manager: str
    models: list[ModelInfo]


class LoadModelRequest(_ModelRequest):
    pass


class UnloadModelRequest(Struct, kw_only=True):
    model: str


class ModelReply(Struct, kw_only=True):
    """Answer to load and unload: the model's state afterwards."""

    manager: str
    model: ModelInfo


class ErrorReply(Struct, kw_only=True):
    code: str
    """Symbolic error code (see the error table); the header carries its numeric status."""
    message: str
    transient: bool = False
    """True when the same request may succeed later (clients retry those)."""
    retry_after: float | None = None
    """Seconds to wait before retrying, when the manager can tell (``overloaded``)."""
