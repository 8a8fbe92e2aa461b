"""Prometheus metrics of a voxbus deployment, gathered from the bus at each scrape.

Nothing is kept between scrapes: the managers already count per model (requests, errors,
latency percentiles, decode speed, real-time factor, memory, load time), every voxbus process
answers `$SRV.STATS` with its load and counters, and JetStream knows the streams' sizes. A scrape
asks for all of it (in parallel, bounded by the discovery wait) and writes it in Prometheus's
text format with prometheus_client. Names: `voxbus_` prefix, base units (seconds, bytes),
`_total` on counters. Per-model series carry a `manager` label: each manager is asked for its
own list (its own subject), so with several managers none is missed and `sum by (model)` adds
them up; latencies since start are real histograms (buckets, sum, count), so they add up too.
"""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from voxbus.bus import Bus
from voxbus.client import ModelClient
from voxbus.deployment_status import discover, process_row, streams

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
STATES = ("unloaded", "loading", "loaded", "failed", "crashed", "quarantined")


async def snapshot(bus: Bus) -> dict:
    """Every manager's models (each asked on its own subject), every process, every stream."""
    client = ModelClient.from_bus(bus)

    async def listed(manager: str | None):
        try:
            return await client.list_models(deadline=3.0, manager=manager)
        except Exception:  # (no manager, or a role that may only ask the group: the rest still counts)
            return None

    anyone, answers, stream_rows = await asyncio.gather(listed(None), discover(bus), streams(bus))
    ids = [(a.get("metadata") or {}).get("manager") for a in answers
           if a.get("name") == bus.subjects.service_name("model-manager")]
    replies = [r for r in await asyncio.gather(*(listed(i) for i in ids if i)) if r is not None]
    if anyone is not None and anyone.manager not in {r.manager for r in replies}:
        replies.append(anyone)  # (a manager without its own list subject, or a role that may only ask the group)
    return {"managers": [(r.manager, r.models) for r in replies],
            "processes": [process_row(a, bus.subjects.prefix) for a in answers], "streams": stream_rows}


class _Snapshot:
    def __init__(self, snap: dict) -> None:
        self.snap = snap

    def collect(self):
        snap = self.snap
        yield GaugeMetricFamily("voxbus_manager_reachable", "1 when a ModelManager answered the model list",
                                value=1 if snap["managers"] else 0)
        yield from model_families(snap["managers"])
        yield from process_families(snap["processes"])
        yield from stream_families(snap["streams"])


def model_families(managers: list) -> list:
    labels = ["model", "kind", "manager"]
    fam = {
        "requests": CounterMetricFamily("voxbus_model_requests", "Requests the model served or refused", labels=labels),
        "errors": CounterMetricFamily("voxbus_model_errors", "Requests that failed or were refused, by error code",
                                      labels=[*labels, "code"]),
        "queue_h": HistogramMetricFamily("voxbus_model_queue_wait_seconds", "Time requests waited before they started",
                                         labels=labels),
        "inf_h": HistogramMetricFamily("voxbus_model_inference_seconds", "Time requests ran (a batch's shared)",
                                       labels=labels),
        "queue": GaugeMetricFamily("voxbus_model_queue_wait_p50_seconds", "Median wait in the model's queue, recent requests", labels=labels),
        "inf50": GaugeMetricFamily("voxbus_model_inference_p50_seconds", "Median inference time, recent requests", labels=labels),
        "inf95": GaugeMetricFamily("voxbus_model_inference_p95_seconds", "95th percentile inference time, recent requests", labels=labels),
        "tps": GaugeMetricFamily("voxbus_model_tokens_per_second", "LLM decode speed, recent requests", labels=labels),
        "rtf": GaugeMetricFamily("voxbus_model_real_time_factor", "STT/TTS compute seconds per audio second", labels=labels),
        "mem": GaugeMetricFamily("voxbus_model_memory_bytes", "Memory the loaded model holds", labels=[*labels, "memory"]),
        "load": GaugeMetricFamily("voxbus_model_load_seconds", "How long the last load took", labels=labels),
        "waiting": GaugeMetricFamily("voxbus_model_queue_length", "Requests running or waiting now", labels=labels),
        "state": GaugeMetricFamily("voxbus_model_state", "1 for the model's current state", labels=[*labels, "state"]),
    }
    for manager, models in managers:
        for m in models:
            lv, x = [m.id, m.kind, manager], m.metrics
            fam["requests"].add_metric(lv, x.requests)
            for code, n in (x.errors_by_code or ({"unknown": x.errors} if x.errors else {})).items():
                fam["errors"].add_metric([*lv, code], n)
            for key, hist in (("queue_h", x.queue_seconds), ("inf_h", x.inference_seconds)):
                if hist is not None:
                    buckets = [(_bound(b), n) for b, n in zip(hist.bounds, hist.counts)] + [("+Inf", hist.count)]
                    fam[key].add_metric(lv, buckets, sum_value=hist.sum)
            fam["queue"].add_metric(lv, x.queue_ms_p50 / 1000)
            fam["inf50"].add_metric(lv, x.inference_ms_p50 / 1000)
            fam["inf95"].add_metric(lv, x.inference_ms_p95 / 1000)
            fam["tps"].add_metric(lv, x.tokens_per_s)
            fam["rtf"].add_metric(lv, x.real_time_factor)
            fam["mem"].add_metric([*lv, "ram"], m.ram_bytes)
            fam["mem"].add_metric([*lv, "vram"], m.vram_bytes)
            fam["load"].add_metric(lv, x.load_ms / 1000)
            fam["waiting"].add_metric(lv, m.queue)
            for state in STATES:
                fam["state"].add_metric([*lv, state], 1 if m.state == state else 0)
    return list(fam.values())


def _bound(seconds: float) -> str:
    return repr(float(seconds))  # (Prometheus's `le` label: "0.005", "1.0")


def process_families(rows: list[dict]) -> list:
    labels = ["kind", "instance", "host"]
    up = GaugeMetricFamily("voxbus_process_up", "1 per voxbus process that answered discovery", labels=labels)
    healthy = GaugeMetricFamily("voxbus_process_healthy", "0 while one of its loops keeps dying", labels=labels)
    uptime = GaugeMetricFamily("voxbus_process_uptime_seconds", "Seconds since the process started", labels=labels)
    sessions = GaugeMetricFamily("voxbus_process_sessions", "Sessions the process holds now", labels=labels)
    pending = GaugeMetricFamily("voxbus_process_pending_messages", "Messages its consumers have not acknowledged", labels=labels)
    lag = GaugeMetricFamily("voxbus_stt_lag_seconds", "Median time from a frame's capture to the STT taking it", labels=labels)
    requests = CounterMetricFamily("voxbus_process_requests", "Requests its endpoints served", labels=labels)
    counters = CounterMetricFamily("voxbus_process_events", "The process's own counters (frames, utterances, partials...)",
                                   labels=[*labels, "counter"])
    for r in rows:
        lv = [r["kind"], r["id"], r["host"]]
        up.add_metric(lv, 1)
        healthy.add_metric(lv, 1 if r["healthy"] else 0)
        if r["uptime_s"] is not None:
            uptime.add_metric(lv, r["uptime_s"])
        if r["sessions"] is not None:
            sessions.add_metric(lv, r["sessions"])
        if r["pending"] is not None:
            pending.add_metric(lv, r["pending"])
        if r.get("lag_ms") is not None:
            lag.add_metric(lv, r["lag_ms"] / 1000)
        requests.add_metric(lv, r["requests"])
        for name, value in (r["counters"] or {}).items():
            counters.add_metric([*lv, name], value)
    return [up, healthy, uptime, sessions, pending, lag, requests, counters]


def stream_families(rows: list[dict]) -> list:
    size = GaugeMetricFamily("voxbus_stream_bytes", "Bytes the stream holds", labels=["stream"])
    limit = GaugeMetricFamily("voxbus_stream_max_bytes", "The stream's byte limit (-1: none)", labels=["stream"])
    msgs = GaugeMetricFamily("voxbus_stream_messages", "Messages the stream holds", labels=["stream"])
    pending = GaugeMetricFamily("voxbus_consumer_pending_messages", "Messages not yet delivered to the consumer",
                                labels=["stream", "consumer"])
    unacked = GaugeMetricFamily("voxbus_consumer_ack_pending_messages", "Delivered, not yet acknowledged",
                                labels=["stream", "consumer"])
    for s in rows:
        size.add_metric([s["stream"]], s["bytes"])
        limit.add_metric([s["stream"]], s["max_bytes"])
        msgs.add_metric([s["stream"]], s["messages"])
        for c in s["consumers"]:
            pending.add_metric([s["stream"], c["name"]], c["pending"])
            unacked.add_metric([s["stream"], c["name"]], c["ack_pending"])
    return [size, limit, msgs, pending, unacked]


async def exposition(bus: Bus) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(await snapshot(bus)))
    return generate_latest(registry)
