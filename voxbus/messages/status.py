"""What a running voxbus service says about itself when asked."""

from __future__ import annotations

from msgspec import Struct


class ServiceStatus(Struct, kw_only=True):
    """A service's state, the reply on ``{p}.status.<service>`` and the `data` of its `status`
    endpoint in ``$SRV.STATS``: one answer per process, so an operator sees which one is in
    trouble."""

    service: str
    """stt, tts or assistant."""
    instance: str = ""
    """The process's micro service id (as in `$SRV.INFO`)."""
    healthy: bool = True
    """False while one of its loops keeps dying (5 restarts within a minute): it is restarted
    still, but somebody should look at the log."""
    restarts: dict[str, int] = {}
    """Restarts of each long-lived loop within the last minute (loops never restarted are left out)."""
    sessions: int = 0
    """Sessions the process holds now."""
    pending: int = 0
    """Messages its durable consumers have not acknowledged yet, as of its last housekeeping pass."""
    lag_ms: float | None = None
    """Median time from a frame's capture to this process taking it, over its last 500 frames (STT)."""
    lag_max_ms: float | None = None
    counters: dict[str, int] = {}
    """Totals since the process started (frames, utterances, sessions_done, ...)."""
    partitions: list[int] | None = None
    """STT with `stt.partitions` > 1: the work stream partitions this process holds now."""
    standby: bool = False
    """Waiting for another process of the service to let go of its durable consumer (one STT
    process takes every session unless `stt.partitions` > 1; the others stand by)."""
