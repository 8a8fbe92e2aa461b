"""The live dashboard `voxbus http` serves at `/`: a static page (dashboard_static/, its
libraries vendored, nothing fetched from elsewhere) and the JSON and event-stream endpoints
under /dashboard/api that it reads.

- /dashboard/api/feed: server-sent events from dashboard_feed.py (transcripts, interim text,
  replies, session control, ADMIN events, status snapshots);
- /dashboard/api/sessions: the stored sessions (from their start events), newest first;
- /dashboard/api/sessions/{id}: one stored session's transcripts with word timings;
- /dashboard/api/sessions/{id}/audio.wav: its stored audio, as published.

When the gateway has an API key, the API paths want it like /v1 does (the page asks for it
once and keeps it for the tab); the static page itself holds no data.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from voxbus.admin_events import since_time
from voxbus.errors import ConfigError
from voxbus.gateways.api_errors import ApiError
from voxbus.gateways.session_index import stored_sessions
from voxbus.replay import Window, load_session, write_wav
from voxbus.subjects import validate_session_id

STATIC = Path(__file__).with_name("dashboard_static")
API = "/dashboard/api"
MAX_SESSIONS = 200


async def index(request: Request) -> FileResponse:
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


async def sse(items: AsyncIterator[tuple[str, dict]]) -> AsyncIterator[bytes]:
    try:
        async for name, data in items:
            yield f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()
    finally:
        await items.aclose()  # (the tab went away: its subscriptions close now, not at GC)


async def feed(request: Request) -> StreamingResponse:
    gw = request.app.state.gateway
    return StreamingResponse(sse(gw.feed.watch()), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def sessions(request: Request) -> JSONResponse:
    """Sessions started since ?since= (default 24h), newest first, with what their end said."""
    bus = request.app.state.gateway.bus
    try:
        since = since_time(request.query_params.get("since", "24h"))
    except ConfigError as exc:
        raise ApiError(400, str(exc), "invalid_since", "since") from None
    rows = await stored_sessions(bus, since)
    return JSONResponse({"sessions": rows[:MAX_SESSIONS], "more": len(rows) > MAX_SESSIONS})


async def _stored_session(request: Request):
    sid = validate_session_id(request.path_params["session"])
    replay = await load_session(request.app.state.gateway.bus, sid, Window())
    if not replay.events:
        raise ApiError(404, f"nothing is stored for session {sid!r} (expired, or never published)",
                       "session_not_found", "session")
    return replay


async def session(request: Request) -> JSONResponse:
    replay = await _stored_session(request)
    utterances = [msgspec.to_builtins(e.body) for e in replay.events if e.kind == "transcript"]
    controls = [{"t": round(e.t, 3), **msgspec.to_builtins(e.body)} for e in replay.events if e.kind == "control"]
    return JSONResponse({"session": replay.session, "frames": replay.frames, "audio_s": round(replay.audio_s, 3),
                         "utterances": sorted(utterances, key=lambda u: u["start"]), "control": controls})


async def session_audio(request: Request) -> Response:
    replay = await _stored_session(request)
    buf = io.BytesIO()
    if await asyncio.to_thread(write_wav, replay, buf, aligned=True) is None:  # (encoding: off the event loop)
        raise ApiError(404, f"session {replay.session!r} has no stored audio", "session_not_found", "session")
    return Response(buf.getvalue(), media_type="audio/wav",
                    headers={"Content-Disposition": f'inline; filename="{replay.session}.wav"'})


async def status(request: Request) -> JSONResponse:
    return JSONResponse(await request.app.state.gateway.feed.status_now())


def routes() -> list:
    return [Route("/", index, methods=["GET"]),
            Route(f"{API}/feed", feed, methods=["GET"]),
            Route(f"{API}/status", status, methods=["GET"]),
            Route(f"{API}/sessions", sessions, methods=["GET"]),
            Route(f"{API}/sessions/{{session}}", session, methods=["GET"]),
            Route(f"{API}/sessions/{{session}}/audio.wav", session_audio, methods=["GET"]),
            Mount("/dashboard/static", StaticFiles(directory=STATIC), name="dashboard-static")]
