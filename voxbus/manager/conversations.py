"""Per-conversation model state (an LLM's KV cache), kept between turns within limits.

The store is policy only: it holds opaque snapshots with their sizes, evicts the least recently
used beyond `max_conversations` / `max_bytes` or idle past `idle_timeout`, and optionally spills
evicted snapshots to disk so a later turn, or a manager restarted warm, restores instead of
recomputing. Snapshots are keyed by the model's fingerprint, so another model (or another
quantization of it) never restores them. One store per LLM worker process; it is only touched from
that worker's main thread (where the backend runs), so it needs no lock.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol


log = logging.getLogger(__name__)


class Snapshot(Protocol):
    nbytes: int

    def to_bytes(self) -> bytes: ...


@dataclass
class _Entry:
    snapshot: Snapshot
    used: float


EventSink = Callable[[str, str, int, str], None]
"""(event, conversation, bytes, reason): 'evicted' | 'spilled' | 'restored'."""


class ConversationStore:
    def __init__(self, *, max_conversations: int, max_bytes: int, idle_timeout: float, model_key: str,
                 load: Callable[[bytes], Snapshot], spill_dir: Path | None = None,
                 on_event: EventSink | None = None) -> None:
        """Limits as in CacheConfig (cache.max_conversations, max_bytes, idle_timeout)."""
        self.max_conversations = max_conversations
        self.max_bytes = int(max_bytes)
        self.idle_timeout = float(idle_timeout)
        self.model_key = model_key  # model id + fingerprint + quantization
        self.load = load
        self.spill_dir = spill_dir / _safe(model_key) if spill_dir is not None else None
        self.on_event = on_event or (lambda *a: None)
        self.entries: OrderedDict[str, _Entry] = OrderedDict()
        self.bytes = 0

    def get(self, conversation: str) -> Snapshot | None:
        self.expire()
        entry = self.entries.get(conversation)
        if entry is not None:
            self.entries.move_to_end(conversation)
            entry.used = time.monotonic()
            return entry.snapshot
        return self._unspill(conversation)

    def put(self, conversation: str, snapshot: Snapshot) -> None:
        old = self.entries.pop(conversation, None)
        if old is not None:
            self.bytes -= old.snapshot.nbytes
        if self.max_conversations == 0 or snapshot.nbytes > self.max_bytes:
            self.on_event("evicted", conversation, snapshot.nbytes, "larger than cache.max_bytes" if
                          self.max_conversations else "cache disabled")
            return
        self.entries[conversation] = _Entry(snapshot, time.monotonic())
        self.bytes += snapshot.nbytes
        while len(self.entries) > self.max_conversations or self.bytes > self.max_bytes:
            victim = next(iter(self.entries))
            self._evict(victim, "over cache.max_conversations" if len(self.entries) > self.max_conversations
                        else "over cache.max_bytes")

    def forget(self, conversation: str) -> None:
        entry = self.entries.pop(conversation, None)
        if entry is not None:
            self.bytes -= entry.snapshot.nbytes
        if self.spill_dir is not None:
            self._path(conversation).unlink(missing_ok=True)

    def expire(self) -> None:
        if self.idle_timeout <= 0:
            return
        cutoff = time.monotonic() - self.idle_timeout
        for conversation in [c for c, e in self.entries.items() if e.used < cutoff]:
            self._evict(conversation, "idle past cache.idle_timeout")

    def spill_all(self, reason: str = "model unloaded") -> None:
        """Keep every state on disk (when spilling is on) before the model goes away."""
        for conversation in list(self.entries):
            self._evict(conversation, reason)

    def _evict(self, conversation: str, reason: str) -> None:
        entry = self.entries.pop(conversation)
        self.bytes -= entry.snapshot.nbytes
        if self.spill_dir is not None:
            try:
                self._write(conversation, entry.snapshot.to_bytes())
                self.on_event("spilled", conversation, entry.snapshot.nbytes, reason)
                return
            except OSError as exc:
                log.warning("could not spill conversation %s: %s", conversation, exc)
        self.on_event("evicted", conversation, entry.snapshot.nbytes, reason)

    # -- disk ---------------------------------------------------------------------------------------
    def _path(self, conversation: str) -> Path:
        assert self.spill_dir is not None
        return self.spill_dir / f"{_safe(conversation)}.kv"

    def _write(self, conversation: str, data: bytes) -> None:
        path = self._path(conversation)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.partial")
        tmp.write_bytes(data)
        tmp.replace(path)  # a crash mid-write never leaves a truncated state behind

    def _unspill(self, conversation: str) -> Snapshot | None:
        if self.spill_dir is None:
            return None
        path = self._path(conversation)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            snapshot = self.load(data)
        except Exception as exc:  # a damaged or foreign file: recompute rather than fail the turn
            log.warning("ignoring unreadable spilled state %s: %s", path, exc)
            path.unlink(missing_ok=True)
            return None
        path.unlink(missing_ok=True)
        self.put(conversation, snapshot)
        self.on_event("restored", conversation, snapshot.nbytes, "from disk")
        return snapshot


def _safe(name: str) -> str:
    """A file name for any id: readable prefix plus a hash, so distinct ids never collide."""
    keep = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:40]
    return f"{keep}-{hashlib.sha256(name.encode()).hexdigest()[:12]}"
