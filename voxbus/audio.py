"""The one audio path: raw PCM bytes <-> float32 arrays, channel mixing, resampling (libsoxr's
high-quality resampler, not linear interpolation) and framing. Every part of voxbus (ingest, the
STT service, the manager, TTS, replay) and its tests and benchmarks convert through these, so an
integer sample means the same everywhere: s16 x maps to x / 32768 and back, exactly."""

from __future__ import annotations

import numpy as np
import soxr

from voxbus.errors import InvalidAudio
from voxbus.messages.audio import AudioFormat

_DTYPES = {"s16le": np.dtype("<i2"), "s32le": np.dtype("<i4"), "f32le": np.dtype("<f4")}
WAV_SUBTYPES = {"s16le": "PCM_16", "s32le": "PCM_32", "f32le": "FLOAT"}
"""libsndfile subtype that stores each wire sample type without conversion."""


def pcm_samples(data: bytes, fmt: AudioFormat) -> np.ndarray:
    """Raw PCM as its own integer or float samples, shaped (frames, channels), no scaling."""
    return np.frombuffer(data, dtype=_DTYPES[fmt.sample]).reshape(-1, fmt.channels)
_SCALE = {"s16le": 32768.0, "s32le": 2147483648.0, "f32le": 1.0}


def pcm_to_float(data: bytes | memoryview, fmt: AudioFormat) -> np.ndarray:
    """Raw PCM -> float32 array shaped (frames, channels), in [-1, 1]."""
    if len(data) == 0:
        raise InvalidAudio("the audio is empty")
    if len(data) % fmt.frame_bytes:
        raise InvalidAudio(
            f"{len(data)} bytes is not a whole number of {fmt.channels}-channel {fmt.sample} samples "
            f"({fmt.frame_bytes} bytes each)"
        )
    raw = np.frombuffer(data, dtype=_DTYPES[fmt.sample])
    if fmt.sample != "f32le":
        return (raw.astype(np.float32) / np.float32(_SCALE[fmt.sample])).reshape(-1, fmt.channels)
    return checked_float(raw.astype(np.float32)).reshape(-1, fmt.channels)


FLOAT_PEAK_LIMIT = 2.0
"""Float audio is expected in [-1, 1]. Samples a little over full scale (a mix or a resampler can
overshoot, up to 6 dB: |x| <= 2) are clipped to [-1, 1]; anything louder is not audio scaled as
floats (integer sample values sent as f32le, say) and is refused, as are NaN and infinity: such
input made Whisper babble for tens of seconds."""


def checked_float(audio: np.ndarray) -> np.ndarray:
    """The rule above, applied in place: refuse non-finite or far out-of-range samples, clip the rest."""
    if not np.isfinite(audio).all():
        raise InvalidAudio("float audio contains NaN or infinity")
    peak = float(np.abs(audio).max()) if len(audio) else 0.0
    if peak > FLOAT_PEAK_LIMIT:
        raise InvalidAudio(f"float samples must lie in [-1, 1] (up to {FLOAT_PEAK_LIMIT:g} is clipped); this audio "
                           f"peaks at {peak:.3g}: is it integer samples sent as f32le?")
    if peak > 1.0:
        np.clip(audio, -1.0, 1.0, out=audio)
    return audio


def to_mono(audio: np.ndarray) -> np.ndarray:
    return audio[:, 0].copy() if audio.shape[1] == 1 else audio.mean(axis=1, dtype=np.float32)


def resample(mono: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    if rate_in == rate_out:
        return mono.astype(np.float32, copy=False)
    return soxr.resample(mono, rate_in, rate_out, quality="HQ").astype(np.float32, copy=False)


def pcm_to_model_input(data: bytes | memoryview, fmt: AudioFormat, rate: int) -> np.ndarray:
    """Any supported PCM -> float32 mono at `rate`, what speech models take."""
    return resample(to_mono(pcm_to_float(data, fmt)), fmt.rate, rate)


def encode_pcm(audio: np.ndarray, fmt: AudioFormat) -> bytes:
    """float32 samples in [-1, 1], shaped (frames,) or (frames, channels) matching `fmt`, as raw
    PCM of `fmt`'s sample type (no resampling: the rate is the caller's)."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 2 and audio.shape[1] != fmt.channels:
        raise ValueError(f"audio has {audio.shape[1]} channels; the format says {fmt.channels}")
    audio = np.clip(audio.reshape(-1), -1.0, 1.0)
    if fmt.sample == "f32le":
        return audio.astype("<f4").tobytes()
    scale = _SCALE[fmt.sample]
    return np.clip(np.round(audio * scale), -scale, scale - 1).astype(_DTYPES[fmt.sample]).tobytes()


def float_to_pcm(mono: np.ndarray, rate_in: int, fmt: AudioFormat) -> bytes:
    """float32 mono -> raw PCM in `fmt` (resampled, channels duplicated, sample type converted)."""
    audio = resample(np.asarray(mono, dtype=np.float32), rate_in, fmt.rate)
    if fmt.channels > 1:
        audio = np.repeat(audio[:, None], fmt.channels, axis=1)
    return encode_pcm(audio, fmt)


def frame_bytes(fmt: AudioFormat, frame_ms: float) -> int:
    """Bytes of a frame of `frame_ms` (whole samples, at least one) in `fmt`."""
    return max(int(fmt.rate * frame_ms / 1000), 1) * fmt.frame_bytes


MODEL_RATE = 16000
COMPACT = AudioFormat(rate=MODEL_RATE, channels=1, sample="s16le")
"""What speech models take, in its smallest lossless-enough form: 16 kHz mono 16-bit."""


def compact_pcm(data: bytes, fmt: AudioFormat) -> tuple[bytes, AudioFormat]:
    """Audio as the speech model will hear it, 16 kHz mono s16 (a fraction of a 48 kHz stereo
    float file): what a client sends when the original would not fit one message."""
    if fmt == COMPACT:
        return data, fmt
    return float_to_pcm(pcm_to_model_input(data, fmt, MODEL_RATE), MODEL_RATE, COMPACT), COMPACT


def voiced_span(samples: np.ndarray, rate: int) -> tuple[float, float]:
    """(start, end) in seconds of the voiced part of mono `samples`: the first and last 10 ms whose
    RMS is above a tenth of the loudest (the whole length when nothing is)."""
    hop = max(rate // 100, 1)
    rms = np.sqrt(np.mean(samples[: len(samples) // hop * hop].reshape(-1, hop) ** 2, axis=1))
    on = np.nonzero(rms > 0.1 * rms.max())[0] if len(rms) else []
    return (float(on[0] / 100), float((on[-1] + 1) / 100)) if len(on) else (0.0, len(samples) / rate)
