"""Streaming voice activity detection with the Silero VAD model that faster-whisper ships.

This is the one model that lives outside the ModelManager, on purpose: it is a 2 MB signal
filter that must see every 32 ms of every session with its own recurrent state, where a
request-reply hop per window would cost more than the model itself (about 60 us a window here).
The file is found through faster-whisper's package data without importing faster-whisper.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnxruntime

RATE = 16000
WINDOW = 512
"""Samples per VAD decision at 16 kHz (32 ms): the size the Silero model was trained on."""
CONTEXT = 64
"""Samples of the previous window the model sees in front of each window."""


def silero_path() -> Path:
    spec = importlib.util.find_spec("faster_whisper")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("faster-whisper is not installed, and its Silero VAD model with it")
    for root in spec.submodule_search_locations:
        candidates = sorted(Path(root, "assets").glob("silero_vad*.onnx"))
        if candidates:
            return candidates[-1]
    raise FileNotFoundError("no silero_vad*.onnx in faster-whisper's assets")


class SileroVad:
    """One ONNX session shared by every session's stream (call it from one thread at a time)."""

    def __init__(self, path: Path | None = None) -> None:
        opts = onnxruntime.SessionOptions()
        opts.inter_op_num_threads = 1
        opts.intra_op_num_threads = 1
        opts.log_severity_level = 4
        self.session = onnxruntime.InferenceSession(
            str(path or silero_path()), providers=["CPUExecutionProvider"], sess_options=opts)

    def stream(self) -> "VadStream":
        return VadStream(self)


class VadStream:
    """One session's VAD state: the LSTM state and the last CONTEXT samples carry across calls."""

    def __init__(self, vad: SileroVad) -> None:
        self.vad = vad
        self.h = np.zeros((1, 1, 128), dtype=np.float32)
        self.c = np.zeros((1, 1, 128), dtype=np.float32)
        self.context = np.zeros(CONTEXT, dtype=np.float32)

    def probabilities(self, audio: np.ndarray) -> np.ndarray:
        """Speech probability of each whole WINDOW of `audio` (len must be a multiple of WINDOW)."""
        n = len(audio) // WINDOW
        if n == 0:
            return np.zeros(0, dtype=np.float32)
        windows = audio[: n * WINDOW].reshape(n, WINDOW)
        contexts = np.empty((n, CONTEXT), dtype=np.float32)
        contexts[0] = self.context
        contexts[1:] = windows[:-1, -CONTEXT:]
        batch = np.ascontiguousarray(np.concatenate([contexts, windows], axis=1), dtype=np.float32)
        probs, self.h, self.c = self.vad.session.run(None, {"input": batch, "h": self.h, "c": self.c})
        self.context = windows[-1, -CONTEXT:].copy()
        return np.asarray(probs, dtype=np.float32).reshape(-1)
