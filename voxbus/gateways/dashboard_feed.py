"""The dashboard's live feed: what happens on the bus, for every open browser tab.

One set of core subscriptions per gateway (interim and final transcripts, assistant replies,
session control events, ADMIN), opened when the first tab connects and closed with the last, so
an idle gateway pays nothing. Each tab has a bounded queue: a tab that cannot keep up is told
`lagged` and disconnected (it reconnects and starts over) instead of holding the gateway's
memory. While anyone watches, a status snapshot (models, processes, streams: the same gathering
as /metrics) is taken every `interval` seconds and shared by all tabs.

A tab that connects first gets the last hour of ADMIN history (the events timeline), the
sessions open now with their finals so far, and the latest snapshot, then everything live.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

import msgspec

from voxbus.admin_events import describe, events
from voxbus.bus import Bus
from voxbus.errors import ProtocolError
from voxbus.gateways.session_index import stored_sessions
from voxbus.history import stored
from voxbus.messages import codec
from voxbus.messages.admin import AdminEvent, ResourceSnapshot
from voxbus.messages.control import ControlEvent
from voxbus.messages.text import PartialTranscript, ReplyChunk, Transcript

log = logging.getLogger(__name__)

QUEUE = 2000
"""Events a tab may fall behind by before it is dropped."""
HISTORY_S = 3600.0
HISTORY_MAX = 300
OPEN_WITHIN_S = 900.0
"""A new tab is shown the sessions started this recently and not transcribed yet..."""
OPEN_MAX = 12
"""...at most this many, with what they have said so far."""


def transcript_event(tr: Transcript) -> dict:
    # (words and segments are the player's, read from the stream: the live view needs the text)
    return {"session": tr.session, "utterance": tr.utterance, "text": tr.text, "start": tr.start, "end": tr.end,
            "model": tr.model.id if tr.model else "", "timings": msgspec.to_builtins(tr.timings)}


def admin_event(event) -> dict:
    return {"ts": event.ts, "type": type(event).__name__, "line": describe(event), "manager": event.manager,
            "event": getattr(event, "event", ""), "model": getattr(event, "model", ""),
            **({"resources": msgspec.to_builtins(event)} if isinstance(event, ResourceSnapshot) else {})}


class DashboardFeed:
    def __init__(self, bus: Bus, interval: float = 2.0) -> None:
        self.bus = bus
        self.interval = interval
        self.tabs: set[asyncio.Queue] = set()
        self.subs: list = []
        self.ticker: asyncio.Task | None = None
        self.last_status: dict | None = None
        self.resources: dict[str, dict] = {}  # manager -> its latest ResourceSnapshot
        self.lock = asyncio.Lock()
        self.closing: set[asyncio.Task] = set()

    async def watch(self) -> AsyncIterator[tuple[str, dict]]:
        """(event name, data) for one tab, until it goes away or falls behind."""
        queue: asyncio.Queue = asyncio.Queue(QUEUE)
        async with self.lock:
            if not self.subs:  # (not "no tabs": a tab dropped for lagging may still be leaving)
                await self._open()
            self.tabs.add(queue)
        try:
            yield "hello", {"prefix": self.bus.subjects.prefix, "interval": self.interval, "now": time.time()}
            async for item in self._history():
                yield item
            async for item in self._open_sessions():
                yield item
            if self.last_status is not None:
                yield "status", self.last_status
            while True:
                name, data = await queue.get()
                if name == "closing":
                    return
                yield name, data
                if name == "lagged":
                    return
        finally:
            # (often run cancelled: the server cancels a response whose client went away, and under
            # anyio every await here would be cancelled again, so the closing runs as its own task)
            self.tabs.discard(queue)
            if not self.tabs:
                closing = asyncio.create_task(self._close_if_idle(), name="dashboard-feed-close")
                self.closing.add(closing)
                closing.add_done_callback(self.closing.discard)

    async def _close_if_idle(self) -> None:
        async with self.lock:
            if not self.tabs and self.subs:
                await self._close()

    def shutdown(self) -> None:
        """End every tab's stream (the gateway is stopping: an open stream would hold it up)."""
        for queue in list(self.tabs):
            self._clear(queue)
            queue.put_nowait(("closing", {}))

    async def _history(self) -> AsyncIterator[tuple[str, dict]]:
        try:
            past = [e async for e in events(self.bus, time.time() - HISTORY_S)]
        except Exception as exc:  # (a role that may not read ADMIN: the rest of the page still works)
            log.info("the dashboard cannot read the ADMIN history: %s", exc)
            return
        for event in past:
            if isinstance(event, ResourceSnapshot):  # (every 15 s per manager: kept, not listed)
                self.resources[event.manager] = admin_event(event)["resources"]
        lifecycle = [e for e in past if not isinstance(e, ResourceSnapshot)]
        for event in lifecycle[-HISTORY_MAX:]:
            yield "admin", admin_event(event)

    async def _open_sessions(self) -> AsyncIterator[tuple[str, dict]]:
        """The sessions speaking now (started lately, not transcribed yet) and their finals so far;
        what also arrives live meanwhile is sent twice, and the page keeps one of each."""
        s = self.bus.subjects
        try:
            rows = [r for r in await stored_sessions(self.bus, time.time() - OPEN_WITHIN_S)
                    if r["started"] and r["utterances"] is None][:OPEN_MAX]
            for row in reversed(rows):  # (oldest first: the newest ends on top)
                yield "control", {"kind": "start", "type": "start", "session": row["session"], "ts": row["started"]}
                async for msg in stored(self.bus.js, s.stream("text"), s.transcript(row["session"])):
                    if (tr := self._decoded(msg, Transcript)) is not None:
                        yield "transcript", transcript_event(tr)
        except Exception as exc:  # (a role that may not read the streams: live events still come)
            log.info("the dashboard cannot read the open sessions: %s", exc)

    def _send(self, name: str, data: dict) -> None:
        for queue in list(self.tabs):
            try:
                queue.put_nowait((name, data))
            except asyncio.QueueFull:  # too slow: drop what it has not read, tell it, and let it go
                self.tabs.discard(queue)
                self._clear(queue)
                queue.put_nowait(("lagged", {"dropped_after": QUEUE}))

    @staticmethod
    def _clear(queue: asyncio.Queue) -> None:
        with contextlib.suppress(asyncio.QueueEmpty):
            while True:
                queue.get_nowait()

    async def _open(self) -> None:
        s, nc = self.bus.subjects, self.bus.nc
        handlers = {s.all_partials(): self._on_partial, s.all_transcripts(): self._on_transcript,
                    s.all_replies(): self._on_reply, s.all_control(): self._on_control, s.all_admin(): self._on_admin}
        self.subs = [await nc.subscribe(subject, cb=cb) for subject, cb in handlers.items()]
        self.ticker = asyncio.create_task(self._tick(), name="dashboard-status")

    async def _close(self) -> None:
        if self.ticker is not None:
            self.ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.ticker
            self.ticker = None
        for sub in self.subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self.subs = []

    async def status_now(self) -> dict:
        """Models (None: no manager answered), processes, streams, and the latest resources."""
        from voxbus.metrics import snapshot

        snap = await snapshot(self.bus)
        models = [{**msgspec.to_builtins(m), "manager": manager} for manager, ms in snap["managers"] for m in ms]
        self.last_status = {"ts": time.time(), "models": models if snap["managers"] else None,
                            "processes": snap["processes"], "streams": snap["streams"],
                            "resources": self.resources}
        return self.last_status

    async def _tick(self) -> None:
        while True:
            started = time.monotonic()
            try:
                self._send("status", await self.status_now())
            except Exception as exc:  # (the bus is away for a moment: the next tick tries again)
                log.debug("dashboard status snapshot failed: %s", exc)
            await asyncio.sleep(max(0.1, self.interval - (time.monotonic() - started)))

    def _decoded(self, msg, tp):
        try:
            return codec.decode(msg.data, tp)
        except ProtocolError:
            return None  # (not ours to judge: the services that consume it report bad messages)

    async def _on_partial(self, msg) -> None:
        if (p := self._decoded(msg, PartialTranscript)) is not None:
            self._send("partial", {"session": p.session, "utterance": p.utterance, "revision": p.revision,
                                   "text": p.text, "stable": p.stable, "start": p.start, "end": p.end})

    async def _on_transcript(self, msg) -> None:
        if (tr := self._decoded(msg, Transcript)) is not None:
            self._send("transcript", transcript_event(tr))

    async def _on_reply(self, msg) -> None:
        if (r := self._decoded(msg, ReplyChunk)) is not None:
            self._send("reply", msgspec.to_builtins(r))

    async def _on_control(self, msg) -> None:
        if (ev := self._decoded(msg, ControlEvent)) is not None:
            self._send("control", {"kind": msg.subject.rsplit(".", 1)[-1], **msgspec.to_builtins(ev)})

    async def _on_admin(self, msg) -> None:
        if (ev := self._decoded(msg, AdminEvent)) is not None:
            data = admin_event(ev)
            if isinstance(ev, ResourceSnapshot):
                self.resources[ev.manager] = data["resources"]
            self._send("admin", data)
