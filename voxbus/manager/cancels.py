"""Running generations indexed by session and by request id, so that an interrupt event on a
session, or a cancel from a caller that stopped listening, stops them at the next token."""

from __future__ import annotations

import threading


class Cancellations:
    def __init__(self) -> None:
        self._by_key: dict[str, set[threading.Event]] = {}

    def register(self, stop: threading.Event, session: str | None, request_id: str | None) -> list[str]:
        keys = [k for k in (f"session:{session}" if session else None,
                            f"request:{request_id}" if request_id else None) if k]
        for key in keys:
            self._by_key.setdefault(key, set()).add(stop)
        return keys

    def unregister(self, stop: threading.Event, keys: list[str]) -> None:
        for key in keys:
            events = self._by_key.get(key)
            if events is not None:
                events.discard(stop)
                if not events:
                    del self._by_key[key]

    def cancel_session(self, session: str) -> int:
        return self._cancel(f"session:{session}")

    def cancel_request(self, request_id: str) -> int:
        return self._cancel(f"request:{request_id}")

    def _cancel(self, key: str) -> int:
        events = self._by_key.get(key, set())
        for stop in events:
            stop.set()  # read by the backend's cancelled() between tokens, in the worker thread
        return len(events)
