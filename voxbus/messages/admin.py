"""Resource and model-lifecycle events on ``{p}.admin.<event>`` (also kept in the ADMIN stream)."""

from __future__ import annotations

from typing import Literal, Union

from msgspec import Struct

ModelState = Literal["unloaded", "loading", "loaded", "failed", "crashed", "quarantined"]
ModelEventKind = Literal["loading", "loaded", "evicted", "unloaded", "refused", "failed", "crashed", "quarantined"]


class _Admin(Struct, tag_field="type", kw_only=True):
    ts: float = 0.0
    manager: str = ""
    """Id of the manager process that sent it (several may share a cluster)."""


class ModelEvent(_Admin, tag="model"):
    """A model changed state. ``reason`` says why (e.g. ``idle``, ``budget``, ``request``)."""

    event: ModelEventKind
    model: str
    kind: str = ""
    reason: str = ""
    ram_bytes: int = 0
    vram_bytes: int = 0
    load_ms: float = 0.0
    detail: str = ""
    pid: int | None = None
    """The worker process the event is about (``loaded``, ``crashed``)."""
    exit_code: int | None = None
    """``crashed``: the worker's exit status, when it exited rather than died of a signal."""
    signal: str | None = None
    """``crashed``: the signal that ended the worker (``SIGSEGV``, ``SIGKILL``...)."""
    stderr: list[str] = []
    """``crashed``: the last lines the worker wrote to stderr."""


class GpuStats(Struct, kw_only=True):
    index: int
    name: str
    total_bytes: int
    used_bytes: int
    free_bytes: int
    utilization: float | None = None
    """Percent busy, when NVML reports it."""


class LoadedModelStats(Struct, kw_only=True):
    id: str
    kind: str
    ram_bytes: int = 0
    vram_bytes: int = 0
    inflight: int = 0
    idle_s: float = 0.0


class ResourceSnapshot(_Admin, tag="resources"):
    gpus: list[GpuStats] = []
    rss_bytes: int = 0
    ram_total_bytes: int = 0
    ram_available_bytes: int = 0
    ram_budget_bytes: int = 0
    vram_budget_bytes: int = 0
    models: list[LoadedModelStats] = []
    pressure: bool = False
    """True when loaded models use more than 90% of a budget."""


class CacheEvent(_Admin, tag="cache"):
    """A conversation's KV state was evicted, spilled or restored."""

    event: Literal["evicted", "spilled", "restored"]
    model: str
    conversation: str
    bytes: int = 0
    reason: str = ""


class RetentionWarning(_Admin, tag="retention"):
    """A service's consumer is close to losing messages it has not yet taken to the stream's
    limits (an outage of the service, or more load than it keeps up with). Sent when the
    headroom falls under a fifth of what the stream holds, or the oldest message waiting has used
    four fifths of the stream's max_age, every minute while it stays so, and
    once more (`level: ok`) when it recovers. ``manager`` is the service's name."""

    level: Literal["warning", "ok"]
    stream: str
    consumer: str
    unacknowledged: int = 0
    """Messages the consumer has not acknowledged yet (delivered or not)."""
    headroom: int = 0
    """About how many more messages the stream takes before its limits drop the oldest of those."""
    capacity: int = 0
    """About how many messages of this size the stream holds at its max_bytes / max_msgs."""
    oldest_age: float = 0.0
    """Seconds since the oldest message not yet taken was stored (0: none waiting)."""
    max_age: float = 0.0
    """The stream's age limit in seconds (0: none); a warning is also sent when oldest_age passes four fifths of it."""


AdminEvent = Union[ModelEvent, ResourceSnapshot, CacheEvent, RetentionWarning]
