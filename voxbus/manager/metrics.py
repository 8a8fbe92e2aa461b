"""Per-model health metrics over a window of recent requests."""

from __future__ import annotations

from collections import deque

import numpy as np

from voxbus.messages.model import ModelMetrics

WINDOW = 512


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else 0.0


class ModelStats:
    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.load_ms = 0.0
        self._queue_ms: deque[float] = deque(maxlen=WINDOW)
        self._infer_ms: deque[float] = deque(maxlen=WINDOW)
        self._tokens_per_s: deque[float] = deque(maxlen=WINDOW)
        self._rtf: deque[float] = deque(maxlen=WINDOW)

    def record(self, queue_ms: float, infer_ms: float, *, tokens: int = 0, audio_s: float = 0.0) -> None:
        self.requests += 1
        self._queue_ms.append(queue_ms)
        self._infer_ms.append(infer_ms)
        if tokens and infer_ms > 0:
            self._tokens_per_s.append(tokens / (infer_ms / 1000))
        if audio_s > 0:
            self._rtf.append((infer_ms / 1000) / audio_s)

    def record_error(self) -> None:
        self.requests += 1
        self.errors += 1

    def snapshot(self) -> ModelMetrics:
        infer = list(self._infer_ms)
        tps = list(self._tokens_per_s)
        rtf = list(self._rtf)
        return ModelMetrics(
            requests=self.requests, errors=self.errors,
            queue_ms_p50=round(percentile(list(self._queue_ms), 50), 2),
            inference_ms_p50=round(percentile(infer, 50), 2),
            inference_ms_p95=round(percentile(infer, 95), 2),
            tokens_per_s=round(sum(tps) / len(tps), 2) if tps else 0.0,
            real_time_factor=round(sum(rtf) / len(rtf), 4) if rtf else 0.0,
            load_ms=round(self.load_ms, 1),
        )
