"""faster-whisper (CTranslate2) speech-to-text."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from faster_whisper import WhisperModel

from voxbus.manager.backends.base import BackendError, LoadSpec, Segment, SttBackend, TranscribeResult

log = logging.getLogger(__name__)


class WhisperBackend(SttBackend):
    name = "faster_whisper"
    # CTranslate2 compute types; the manager maps 8-bit/16-bit to these.
    quantizations = ("int8", "int8_float32", "int8_float16", "int16", "float16", "bfloat16", "float32")

    def __init__(self) -> None:
        self.model: WhisperModel | None = None
        self.english_only = False

    def load(self, spec: LoadSpec) -> None:
        if not (spec.path / "model.bin").is_file():
            raise BackendError(f"{spec.path} is not a CTranslate2 Whisper model (no model.bin)")
        compute = spec.quantization or "default"
        try:
            self.model = WhisperModel(
                str(spec.path), device=spec.device, compute_type=compute,
                cpu_threads=spec.threads or 0, local_files_only=True,
            )
        except ValueError as exc:  # CTranslate2 rejects compute types the device lacks
            raise BackendError(f"cannot load {spec.model_id} with compute type {compute!r}: {exc}") from None
        self.english_only = not self.model.model.is_multilingual

    def transcribe(self, audio: np.ndarray, language: str | None, options: dict[str, Any]) -> TranscribeResult:
        assert self.model is not None, "transcribe before load"
        segments, info = self.model.transcribe(
            audio,
            language=None if self.english_only else language,
            beam_size=int(options.get("beam_size", 1)),
            vad_filter=False,  # the STT service cuts utterances; the manager transcribes what it gets
            condition_on_previous_text=False,
            without_timestamps=False,
        )
        # The segments generator is lazy: consuming it *is* the inference, so do it here,
        # in the model's worker thread, never on the event loop.
        out = [Segment(start=s.start, end=s.end, text=s.text.strip()) for s in segments]
        return TranscribeResult(segments=out, language=info.language, duration=len(audio) / self.sample_rate)

    @classmethod
    def supports_cuda(cls) -> bool:
        import ctranslate2  # a faster-whisper dependency; only backends may import it

        return ctranslate2.get_cuda_device_count() > 0

    def unload(self) -> None:
        self.model = None

    def footprint_hint(self) -> int:
        return 0
