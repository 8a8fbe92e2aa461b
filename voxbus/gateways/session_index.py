"""Which sessions the streams hold, from their control events: when each started, whether it
was transcribed (and into how many utterances), how many errors it reported. Read through an
ephemeral consumer from a start time (history.py), so nothing live notices."""

from __future__ import annotations

from voxbus.bus import Bus
from voxbus.errors import ProtocolError
from voxbus.history import stored
from voxbus.messages import codec
from voxbus.messages.control import ControlEvent, SessionEnd, SessionStart, SessionTranscribed


async def stored_sessions(bus: Bus, since: float | None) -> list[dict]:
    """Sessions with a control event stored since `since` (Unix time), newest first."""
    s = bus.subjects
    found: dict[str, dict] = {}
    async for msg in stored(bus.js, s.stream("ctl"), s.all_control(), since=since):
        try:
            ev = codec.decode(msg.data, ControlEvent)
        except ProtocolError:
            continue
        row = found.setdefault(ev.session, {"session": ev.session, "started": None, "ended": None,
                                            "utterances": None, "errors": 0})
        if isinstance(ev, SessionStart):
            row["started"] = ev.ts
        elif isinstance(ev, SessionEnd):
            row["ended"] = row["ended"] or ev.ts
        elif isinstance(ev, SessionTranscribed):
            row["utterances"], row["ended"] = ev.utterances, ev.ts
        elif msg.subject.endswith(".error"):
            row["errors"] += 1
    return sorted(found.values(), key=lambda r: -(r["started"] or r["ended"] or 0))
