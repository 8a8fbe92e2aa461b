"""Piper (ONNX VITS) text-to-speech. Piper has no quantization: a voice runs as shipped."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
from piper import PiperVoice
from piper.config import SynthesisConfig

from voxbus.manager.backends.base import BackendError, LoadSpec, SynthesisResult, TtsBackend


class PiperBackend(TtsBackend):
    name = "piper"
    quantizations = ()

    def __init__(self) -> None:
        self.voice: PiperVoice | None = None
        self._size = 0

    def load(self, spec: LoadSpec) -> None:
        config = spec.config_path or spec.path.with_name(spec.path.name + ".json")
        for path in (spec.path, config):
            if not path.is_file():
                raise BackendError(f"Piper voice file not found: {path}")
        self.voice = PiperVoice.load(spec.path, config_path=config, use_cuda=spec.device == "cuda")
        self._size = spec.path.stat().st_size

    def voices(self) -> list[str]:
        if self.voice is None:
            return []
        return sorted(self.voice.config.speaker_id_map or {})

    def output_rate(self) -> int:
        return self.voice.config.sample_rate if self.voice is not None else 0

    def synthesize(self, text: str, voice: str | None, options: dict[str, Any],
                   progress: Callable[[], None] | None = None) -> SynthesisResult:
        assert self.voice is not None, "synthesize before load"
        if not text.strip():
            raise BackendError("nothing to say: the text is empty")
        speaker = None
        if voice:
            ids = self.voice.config.speaker_id_map or {}
            if voice not in ids:
                raise BackendError(f"voice {voice!r} not in this model (speakers: {', '.join(ids) or 'none'})")
            speaker = ids[voice]
        speed = float(options.get("speed", 1.0))
        cfg = SynthesisConfig(speaker_id=speaker, length_scale=1.0 / speed if speed else None)
        chunks = []
        for chunk in self.voice.synthesize(text, syn_config=cfg):  # one per sentence
            chunks.append(chunk.audio_float_array)
            if progress is not None:
                progress()
        if not chunks:
            raise BackendError("the text produced no speech (no pronounceable words)")
        audio = np.concatenate(chunks).astype(np.float32, copy=False)
        return SynthesisResult(audio=audio, sample_rate=self.voice.config.sample_rate)

    def unload(self) -> None:
        self.voice = None

    def footprint_hint(self) -> int:
        return self._size
