"""Coqui TTS backend (the maintained `coqui-tts` fork, imported as `TTS`).

`TTS` pulls in torch, so it is imported inside load(): importing this module stays cheap and works
without the `coqui` extra installed.
"""

from __future__ import annotations

import gc
import logging
from pathlib import Path
from typing import Any

import numpy as np

from .base import BackendError, LoadSpec, SynthesisResult, TtsBackend, UnsupportedQuantization

log = logging.getLogger(__name__)

# Names Coqui's own recipes and releases give the checkpoint inside a model directory.
_CHECKPOINT_NAMES = ("model.pth", "model_file.pth", "best_model.pth", "checkpoint.pth", "model.pt")


def _resolve(spec: LoadSpec) -> tuple[Path, Path]:
    """Turn spec.path (file or directory) and spec.config_path into (checkpoint, config)."""
    path = Path(spec.path)
    if not path.exists():
        raise BackendError(f"coqui: model path {path} does not exist")
    folder = path if path.is_dir() else path.parent
    config = Path(spec.config_path) if spec.config_path else folder / "config.json"
    if not config.is_file():
        raise BackendError(f"coqui: config file {config} not found (set config_path)")
    if path.is_dir():
        found = [folder / n for n in _CHECKPOINT_NAMES if (folder / n).is_file()]
        # No known file name: hand the directory over, models such as XTTS load from one.
        path = found[0] if found else path
    return path, config


class CoquiBackend(TtsBackend):
    name = "coqui"
    quantizations = ()  # Coqui ships no quantized variants

    def __init__(self) -> None:
        self._tts: Any = None
        self._device = "cpu"
        self._footprint = 0
        self._pad = 0  # zeros Coqui appends after each sentence

    def load(self, spec: LoadSpec) -> None:
        if spec.quantization:
            raise UnsupportedQuantization(f"coqui: no quantization support (asked for {spec.quantization!r})")
        checkpoint, config = _resolve(spec)
        try:
            import torch
            from TTS.api import TTS
            from TTS.utils import synthesizer
        except ImportError as exc:
            raise BackendError(f"coqui: coqui-tts is not installed ({exc}); run: pip install 'voxbus[coqui]'") from exc
        if spec.device == "cuda" and not torch.cuda.is_available():
            raise BackendError("coqui: device 'cuda' requested but torch sees no CUDA device")
        if spec.threads:
            torch.set_num_threads(spec.threads)  # process-wide, but only Coqui uses torch here
        try:
            tts = TTS(model_path=str(checkpoint), config_path=str(config), progress_bar=False).to(spec.device)
        except Exception as exc:  # Coqui raises anything from KeyError to RuntimeError on bad files
            raise BackendError(f"coqui: cannot load {checkpoint}: {exc}") from exc
        if tts.synthesizer is None:
            raise BackendError(f"coqui: {checkpoint} is not a text-to-speech model")
        self._tts, self._device = tts, spec.device
        self._pad = int(getattr(synthesizer, "PAD_SILENCE_SAMPLES", 0))
        files = [checkpoint] if checkpoint.is_file() else [p for p in checkpoint.rglob("*") if p.is_file()]
        self._footprint = sum(p.stat().st_size for p in files)
        log.info("coqui: loaded %s on %s (%d Hz)", checkpoint, spec.device, tts.synthesizer.output_sample_rate)

    def _loaded(self) -> Any:
        if self._tts is None:
            raise BackendError("coqui: no model loaded")
        return self._tts

    def voices(self) -> list[str]:
        return list(self._loaded().speakers or [])

    def output_rate(self) -> int:
        return int(self._tts.synthesizer.output_sample_rate) if self._tts is not None else 0

    def synthesize(self, text: str, voice: str | None, options: dict[str, Any],
                   progress=None) -> SynthesisResult:  # one call: no progress to report
        tts = self._loaded()
        if not text or not text.strip():
            raise BackendError("coqui: empty text")
        known = self.voices()
        if voice is not None and voice not in known:
            raise BackendError(f"coqui: unknown speaker {voice!r}; available: {known}")
        if voice is None and known:
            voice = known[0]  # multi-speaker models refuse to guess; any stable default beats an error
        kwargs: dict[str, Any] = {}
        if tts.is_multi_lingual:
            kwargs["language"] = options.get("language", "en")
        model = tts.synthesizer.tts_model
        try:
            speed = float(options.get("speed") or 1.0)
        except (TypeError, ValueError):
            speed = -1.0
        if not speed > 0:
            raise BackendError(f"coqui: speed must be a positive number, got {options.get('speed')!r}")
        # VITS/Glow/FastPitch read the duration multiplier from the model, so it is set per call
        # and restored; XTTS takes `speed` directly.
        old_scale = getattr(model, "length_scale", None)
        if speed != 1.0:
            if old_scale is not None:
                model.length_scale = old_scale / speed
            elif "xtts" in str(getattr(tts.config, "model", "")):
                kwargs["speed"] = speed
            else:
                raise BackendError(f"coqui: this model ({type(model).__name__}) has no speed control")
        try:
            wav = tts.tts(text, speaker=voice, **kwargs)
        except (ValueError, KeyError, RuntimeError) as exc:
            raise BackendError(f"coqui: synthesis failed: {exc}") from exc
        finally:
            if old_scale is not None:
                model.length_scale = old_scale
        audio = np.asarray(wav, dtype=np.float32).reshape(-1)
        # Coqui appends a fixed block of zeros after every sentence; the last one is only latency.
        pad = self._pad
        if pad and len(audio) > pad and not audio[-pad:].any():
            audio = audio[:-pad]
        audio = np.clip(audio, -1.0, 1.0)  # vocoders can overshoot slightly; the contract is [-1, 1]
        return SynthesisResult(audio=audio, sample_rate=int(tts.synthesizer.output_sample_rate))

    def unload(self) -> None:
        if self._tts is None:
            return
        self._tts, self._footprint = None, 0
        gc.collect()  # nn.Module graphs hold reference cycles; free the weights now, not later
        if self._device == "cuda":
            import torch

            torch.cuda.empty_cache()  # hand the cached blocks back so the manager's measurement drops
        log.info("coqui: unloaded")

    def footprint_hint(self) -> int:
        return self._footprint
