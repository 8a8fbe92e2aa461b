"""When a model that keeps crashing stops being restarted: pure policy, tested without models.

Each worker death that the manager did not ask for is recorded. A model with `limit` crashes
within `window` seconds is quarantined: its requests fail at once with `model_failed` (no crash
loop that burns CPU and hides the cause), until an operator loads it again explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Crash:
    at: float
    instance: int
    reason: str  # "killed by SIGSEGV", "hung: no progress for 120s ...", "exited with status 1"


@dataclass
class CrashHistory:
    limit: int
    window: float
    crashes: list[Crash] = field(default_factory=list)
    quarantined: bool = False

    def record(self, crash: Crash) -> bool:
        """Add a crash; True when it puts the model into quarantine."""
        self.crashes.append(crash)
        self._forget_before(crash.at - self.window)
        if not self.quarantined and len(self.crashes) >= self.limit:
            self.quarantined = True
            return True
        return False

    def recent(self, now: float) -> list[Crash]:
        return [c for c in self.crashes if c.at >= now - self.window]

    def count(self, now: float, instance: int | None = None) -> int:
        return sum(1 for c in self.recent(now) if instance is None or c.instance == instance)

    def lift(self) -> None:
        """An operator's explicit load: forget the history and serve again."""
        self.crashes.clear()
        self.quarantined = False

    def summary(self, now: float) -> str:
        recent = self.recent(now)
        if not recent:
            return "no recent crashes"
        span = max(now - recent[0].at, 1.0)
        reasons = "; ".join(dict.fromkeys(c.reason for c in recent))
        return f"{len(recent)} crashes in the last {span / 60:.1f} min ({reasons})"

    def _forget_before(self, cutoff: float) -> None:
        if not self.quarantined:  # a quarantined model keeps its record until it is lifted
            self.crashes = [c for c in self.crashes if c.at >= cutoff]
