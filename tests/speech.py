"""Test speech made by the bundled Piper voice through the ModelManager (no fixture files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from voxbus.audio import pcm_to_float, to_mono
from voxbus.client import ModelClient

GAP_S = 0.8  # silence between sentences: longer than stt.min_silence, so each is its own utterance


async def speak(client: ModelClient, sentences: list[str], lead_s: float = 0.4) -> tuple[np.ndarray, int]:
    """float32 mono audio of the sentences with silence around each, and its rate."""
    parts: list[np.ndarray] = []
    rate = 22050
    for text in sentences:
        pcm, meta = await client.synthesize(text)
        rate = meta.format.rate
        speech = to_mono(pcm_to_float(pcm, meta.format))
        parts += [np.zeros(int((lead_s if not parts else GAP_S) * rate), np.float32), speech]
    parts.append(np.zeros(int(GAP_S * rate), np.float32))
    return np.concatenate(parts), rate


def write_variant(audio: np.ndarray, rate: int, path: Path, *, to_rate: int | None = None, channels: int = 1,
                  subtype: str | None = None, fmt: str | None = None) -> Path:
    """The same speech as another rate / channel count / sample type / container."""
    out = audio if not to_rate or to_rate == rate else soxr.resample(audio, rate, to_rate).astype(np.float32)
    if channels > 1:
        out = np.repeat(out[:, None], channels, axis=1) * np.linspace(1.0, 0.7, channels, dtype=np.float32)
    sf.write(str(path), out, to_rate or rate, subtype=subtype, format=fmt)
    return path
