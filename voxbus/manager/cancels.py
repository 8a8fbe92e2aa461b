"""Requests that an event outside their own reply inbox may stop: a generation is stopped by an
interrupt event on its session, or by a GenerateCancel naming its request id (a caller that
stopped reading). Both reach every manager, so the one running it hears."""

from __future__ import annotations

from voxbus.manager.requests import RequestContext

INTERRUPTED = "interrupted"
CANCELLED = "cancelled by its caller"


class Cancellations:
    def __init__(self) -> None:
        self._by_key: dict[str, set[RequestContext]] = {}

    def register(self, ctx: RequestContext, session: str | None, request_id: str | None) -> list[str]:
        keys = [k for k in (f"session:{session}" if session else None,
                            f"request:{request_id}" if request_id else None) if k]
        for key in keys:
            self._by_key.setdefault(key, set()).add(ctx)
        return keys

    def unregister(self, ctx: RequestContext, keys: list[str]) -> None:
        for key in keys:
            held = self._by_key.get(key)
            if held is not None:
                held.discard(ctx)
                if not held:
                    del self._by_key[key]

    def cancel_session(self, session: str) -> int:
        return self._cancel(f"session:{session}", INTERRUPTED)

    def cancel_request(self, request_id: str) -> int:
        return self._cancel(f"request:{request_id}", CANCELLED)

    def _cancel(self, key: str, reason: str) -> int:
        held = list(self._by_key.get(key, ()))
        for ctx in held:
            ctx.cancel(reason)
        return len(held)
