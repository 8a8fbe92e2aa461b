"""Permission violations turned into prompt, named errors.

A server with auth on drops a publish or subscription the credential may not make and tells the
client asynchronously (`-ERR 'Permissions Violation for Publish to "<subject>"'`). A request
whose publish was dropped would otherwise just wait for its timeout. Each connection voxbus
opens has a Violations object: the connection's error callback records every violation (and
logs it once per subject), and a caller waiting on something can watch the subjects it used and
fail at once with PermissionDenied naming the subject.
"""

from __future__ import annotations

import asyncio
import logging
import re
import weakref
from typing import Awaitable, TypeVar

from voxbus.errors import PermissionDenied

log = logging.getLogger(__name__)

T = TypeVar("T")
VIOLATION = re.compile(r'permissions violation for (publish|subscription) to "([^"]+)"', re.IGNORECASE)
_BY_CONNECTION: "weakref.WeakKeyDictionary[object, Violations]" = weakref.WeakKeyDictionary()


class Violations:
    def __init__(self) -> None:
        self._watchers: list[tuple[str, asyncio.Future]] = []
        self._logged: set[tuple[str, str]] = set()

    def attach(self, nc: object) -> None:
        _BY_CONNECTION[nc] = self

    def record(self, exc: BaseException) -> bool:
        """Whether `exc` (from the connection's error callback) was a permission violation."""
        m = VIOLATION.search(str(exc))
        if m is None:
            return False
        # (nats-py hands the server's message over in lower case: subjects compare so too, and a
        # watcher that named the exact subject gets it back as it wrote it)
        what, subject = m.group(1).lower(), m.group(2)
        for prefix, fut in list(self._watchers):
            if subject.startswith(prefix.lower()) and not fut.done():
                fut.set_result(PermissionDenied(prefix if prefix.lower() == subject else subject, what))
        if (what, subject) not in self._logged:
            self._logged.add((what, subject))
            log.error("permission denied: this connection's credentials may not %s %s",
                      "publish to" if what == "publish" else "subscribe to", subject)
        return True

    async def guard(self, work: Awaitable[T], prefix: str) -> T:
        """Await `work`, or raise PermissionDenied as soon as a subject starting with `prefix`
        is refused on this connection."""
        denied: asyncio.Future = asyncio.get_running_loop().create_future()
        entry = (prefix, denied)
        self._watchers.append(entry)
        task = asyncio.ensure_future(work)
        try:
            done, _ = await asyncio.wait({task, denied}, return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                return task.result()
            task.cancel()
            raise denied.result()
        finally:
            self._watchers.remove(entry)
            if not task.done():
                task.cancel()


def violations_of(nc: object) -> Violations | None:
    """The Violations of a connection voxbus opened (None for one opened elsewhere)."""
    return _BY_CONNECTION.get(nc)


async def guarded(nc: object, work: Awaitable[T], prefix: str) -> T:
    watch = violations_of(nc)
    return await (watch.guard(work, prefix) if watch is not None else work)
