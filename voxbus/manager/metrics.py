"""Per-model health metrics: totals and latency histograms since the manager started (what
Prometheus scrapes), percentiles and speeds over a window of recent requests (what `voxbus
models` and the dashboard show)."""

from __future__ import annotations

import bisect
from collections import Counter, deque

import numpy as np

from voxbus.messages.model import Histogram, ModelMetrics

WINDOW = 512
LATENCY_BOUNDS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
"""Histogram buckets, seconds: from a batched STT request's share (milliseconds) to a long
generation (minutes)."""


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else 0.0


class LatencyHistogram:
    def __init__(self, bounds: tuple[float, ...] = LATENCY_BOUNDS_S) -> None:
        self.bounds = bounds
        self.buckets = [0] * (len(bounds) + 1)  # (the last one: over every bound)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.buckets[bisect.bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds

    def snapshot(self) -> Histogram:
        cumulative, total = [], 0
        for n in self.buckets[:-1]:
            total += n
            cumulative.append(total)
        return Histogram(bounds=list(self.bounds), counts=cumulative, count=total + self.buckets[-1],
                         sum=round(self.sum, 6))


class ModelStats:
    def __init__(self) -> None:
        self.requests = 0
        self.errors: Counter[str] = Counter()
        self.load_ms = 0.0
        self.queue = LatencyHistogram()
        self.inference = LatencyHistogram()
        self._queue_ms: deque[float] = deque(maxlen=WINDOW)
        self._infer_ms: deque[float] = deque(maxlen=WINDOW)
        self._tokens_per_s: deque[float] = deque(maxlen=WINDOW)
        self._rtf: deque[float] = deque(maxlen=WINDOW)

    def record(self, queue_ms: float, infer_ms: float, *, tokens: int = 0, audio_s: float = 0.0) -> None:
        self.requests += 1
        self._queue_ms.append(queue_ms)
        self._infer_ms.append(infer_ms)
        self.queue.observe(queue_ms / 1000)
        self.inference.observe(infer_ms / 1000)
        if tokens and infer_ms > 0:
            self._tokens_per_s.append(tokens / (infer_ms / 1000))
        if audio_s > 0:
            self._rtf.append((infer_ms / 1000) / audio_s)

    def record_error(self, code: str) -> None:
        self.requests += 1
        self.errors[code] += 1

    def snapshot(self) -> ModelMetrics:
        infer = list(self._infer_ms)
        tps = list(self._tokens_per_s)
        rtf = list(self._rtf)
        return ModelMetrics(
            requests=self.requests, errors=sum(self.errors.values()), errors_by_code=dict(self.errors),
            queue_ms_p50=round(percentile(list(self._queue_ms), 50), 2),
            inference_ms_p50=round(percentile(infer, 50), 2),
            inference_ms_p95=round(percentile(infer, 95), 2),
            tokens_per_s=round(sum(tps) / len(tps), 2) if tps else 0.0,
            real_time_factor=round(sum(rtf) / len(rtf), 4) if rtf else 0.0,
            load_ms=round(self.load_ms, 1),
            queue_seconds=self.queue.snapshot(), inference_seconds=self.inference.snapshot(),
        )
