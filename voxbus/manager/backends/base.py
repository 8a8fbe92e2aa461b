"""The narrow interface every model backend implements.

Backends are the only modules that import model libraries (llama_cpp, faster_whisper, piper,
TTS), and only model worker processes import backends (voxbus/manager/worker_main.py). Every
method here is *blocking* and is called from the worker's main thread; a backend object is used
by one thread at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np

from voxbus.errors import BackendError, ContextTooLong, UnsupportedQuantization  # noqa: F401 (backends raise them)


@dataclass(frozen=True)
class LoadSpec:
    """What a backend needs to load one model: resolved paths and options, no config objects."""

    model_id: str
    path: Path  # model file or directory
    config_path: Path | None = None  # e.g. a Piper voice .json or a Coqui config.json
    quantization: str | None = None  # backend-specific name, already mapped by the manager
    device: str = "cpu"  # "cpu" or "cuda"
    n_gpu_layers: int = 0
    threads: int | None = None
    options: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""  # content hash of the source: keys derived files (quantized GGUFs)
    cache_dir: Path | None = None  # where a backend may write derived files


@dataclass
class Word:
    word: str
    start: float  # seconds from the start of the audio transcribed
    end: float
    probability: float


@dataclass
class Segment:
    start: float
    end: float
    text: str
    words: list[Word] = field(default_factory=list)  # when the request asked for word timings
    tokens: list[int] = field(default_factory=list)  # (the decoder's text tokens, for aligning words)


@dataclass
class TranscribeResult:
    segments: list[Segment]
    language: str
    duration: float  # seconds of audio


@dataclass
class SynthesisResult:
    audio: np.ndarray  # float32 mono in [-1, 1]
    sample_rate: int


@dataclass
class GenerateResult:
    text: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    finish_reason: str  # "stop" | "length" | "cancelled"


class Backend:
    """Base class: load/unload plus the task method of its kind."""

    kind: ClassVar[str] = ""
    name: ClassVar[str] = ""
    # Quantization names this backend understands (empty: it has none, and says so).
    quantizations: ClassVar[tuple[str, ...]] = ()

    def load(self, spec: LoadSpec) -> None:
        raise NotImplementedError

    def unload(self) -> None:
        raise NotImplementedError

    def footprint_hint(self) -> int:
        """Bytes the backend believes it holds (file sizes); the manager measures the real one."""
        return 0

    @classmethod
    def supports_cuda(cls) -> bool:
        """Whether this build of the library can run on an NVIDIA GPU (device: auto)."""
        return False


class SttBackend(Backend):
    kind = "stt"
    sample_rate: ClassVar[int] = 16000

    def transcribe(self, audio: np.ndarray, language: str | None, options: dict[str, Any]) -> TranscribeResult:
        """audio: float32 mono at `sample_rate`."""
        raise NotImplementedError


class TtsBackend(Backend):
    kind = "tts"

    def synthesize(self, text: str, voice: str | None, options: dict[str, Any],
                   progress: Callable[[], None] | None = None) -> SynthesisResult:
        """`progress()` is called as parts of the speech are made (a long text takes minutes:
        the manager's watchdog must see it is alive)."""
        raise NotImplementedError

    def voices(self) -> list[str]:
        return []

    def output_rate(self) -> int:
        """The sample rate it synthesizes at (0: unknown until it speaks)."""
        return 0


class LlmBackend(Backend):
    kind = "llm"
    conversations = None  # a manager.conversations.ConversationStore, attached after load

    def snapshot_loader(self) -> Callable[[bytes], Any] | None:
        """How to read a spilled conversation state back; None: no conversation states."""
        return None

    def generate(
        self,
        prompt: str | None,
        messages: list[dict[str, str]] | None,
        options: dict[str, Any],
        on_text: Callable[[str], None],
        cancelled: Callable[[], bool],
        conversation: str | None = None,
    ) -> GenerateResult:
        """Stream text pieces to on_text as they are produced; stop early when cancelled().
        With a conversation id, resume that conversation's cached state and keep the new one."""
        raise NotImplementedError
