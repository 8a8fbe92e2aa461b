"""What `voxbus status` shows: every voxbus process of the deployment, found through NATS micro
discovery (`$SRV.STATS`: managers, STT, TTS and assistant processes, gateways), and the streams'
sizes against their limits with each consumer's backlog.

Discovery is scatter-gather: one STATS request, every process answers on the same inbox, and
the answers are collected until none has come for a short while (so a big deployment is not cut
off at a fixed count, and a small one does not wait a fixed time).
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime

from nats.js.errors import NotFoundError

from voxbus.bus import Bus
from voxbus.subjects import STREAM_FAMILIES, Subjects

QUIET_S = 0.3
"""Collect discovery answers until none has come for this long..."""
MAX_WAIT_S = 3.0
"""...or this long at most."""
KINDS = ("model-manager", "stt", "tts", "assistant", "http", "wyoming")


async def discover(bus: Bus) -> list[dict]:
    """The STATS answer of every micro service under this deployment's prefix."""
    nc = bus.nc
    inbox = nc.new_inbox()
    answers: list[dict] = []
    last = [time.monotonic()]

    async def on(msg) -> None:
        try:
            answers.append(json.loads(msg.data))
            last[0] = time.monotonic()
        except ValueError:
            pass

    sub = await nc.subscribe(inbox, cb=on)
    try:
        await nc.publish(Subjects.micro("STATS"), b"", reply=inbox)
        await nc.flush()
        start = time.monotonic()
        while time.monotonic() - start < MAX_WAIT_S:  # the first answer may take a while; then a quiet spell ends it
            if answers and time.monotonic() - last[0] >= QUIET_S:
                break
            await asyncio.sleep(0.05)
    finally:
        await sub.unsubscribe()
    names = {bus.subjects.service_name(kind) for kind in KINDS}  # (not a longer prefix's processes)
    return [a for a in answers if a.get("name") in names]


def process_row(answer: dict, prefix: str) -> dict:
    """One process, flattened: kind, id, version, uptime, health, load."""
    started = answer.get("started", "")
    try:
        uptime = time.time() - datetime.fromisoformat(started.replace("Z", "+00:00")).timestamp()
    except ValueError:
        uptime = None
    endpoints = answer.get("endpoints") or []
    status = next((e.get("data") for e in endpoints if e.get("name") == "status" and e.get("data")), None) or {}
    meta = answer.get("metadata") or {}
    row = {"kind": answer["name"][len(prefix) + 1:], "id": answer.get("id", ""), "version": answer.get("version", ""),
           "host": meta.get("host", ""), "pid": meta.get("pid", ""),
           "uptime_s": round(uptime, 1) if uptime is not None else None,
           "healthy": status.get("healthy", True), "sessions": status.get("sessions"),
           "pending": status.get("pending"), "in_flight": None, "counters": status.get("counters", {}),
           "requests": sum(e.get("num_requests", 0) for e in endpoints if e.get("name") != "status"),
           "errors": sum(e.get("num_errors", 0) for e in endpoints if e.get("name") != "status")}
    if row["kind"] == "model-manager":
        row["kind"] = "manager"
        data = [e.get("data") or {} for e in endpoints]
        row["in_flight"] = sum(int(d.get("in_flight", 0) or 0) for d in data if isinstance(d, dict))
    if status.get("lag_ms") is not None:
        row["lag_ms"] = status["lag_ms"]
    if status.get("partitions") is not None:
        row["partitions"] = status["partitions"]
    row["standby"] = bool(status.get("standby"))
    return row


async def streams(bus: Bus) -> list[dict]:
    """Each stream's bytes and messages against its limits, and each consumer's backlog."""
    out = []
    for family in STREAM_FAMILIES:
        name = bus.subjects.stream(family)
        try:
            info = await bus.js.stream_info(name)
        except NotFoundError:
            continue
        consumers = []
        try:
            for c in await bus.js.consumers_info(name):
                consumers.append({"name": c.name, "pending": c.num_pending, "ack_pending": c.num_ack_pending,
                                  "bound": bool(c.push_bound)})
        except Exception:  # (a role that may not list consumers still sees the stream)
            pass
        cfg, state = info.config, info.state
        out.append({"stream": name, "bytes": state.bytes, "max_bytes": cfg.max_bytes, "messages": state.messages,
                    "max_msgs": cfg.max_msgs, "max_age_s": cfg.max_age, "replicas": cfg.num_replicas,
                    "consumers": sorted(consumers, key=lambda c: c["name"])})
    return out


async def deployment(bus: Bus) -> dict:
    answers, stream_rows = await asyncio.gather(discover(bus), streams(bus))
    prefix = bus.subjects.prefix
    rows = sorted((process_row(a, prefix) for a in answers), key=lambda r: (r["kind"], r["host"], r["id"]))
    return {"nats": bus.url, "prefix": prefix, "processes": rows, "streams": stream_rows}
