"""`voxbus http`: the OpenAI-compatible HTTP API, a Starlette app served by uvicorn in voxbus's
own event loop, so it shares one NATS connection (and one model client) with nothing else to run.

Every request is checked before any work: the API key (`Authorization: Bearer`, when one is
set), the body size (`http.max_upload` for uploads, `http.max_json` for JSON bodies: over it is a
413, counted as the body arrives, so a huge upload is refused without being read), and the
fields. Every error, a voxbus one or an unexpected one, is answered in OpenAI's JSON shape
(api_errors.py) and the gateway goes on serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import time
from collections.abc import AsyncIterator

import uvicorn
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from voxbus import __version__
from voxbus.bus import Bus
from voxbus.client import ModelClient
from voxbus.errors import VoxbusError
from voxbus.gateways import dashboard
from voxbus.gateways.api_errors import ApiError, from_exception
from voxbus.gateways.dashboard_feed import DashboardFeed
from voxbus.gateways.discovery import announce
from voxbus.gateways.http_chat import chat_completions, completions
from voxbus.gateways.http_speech import speech
from voxbus.gateways.http_transcribe import transcriptions
from voxbus.messages.status import ServiceStatus
from voxbus.pipeline import manager_running
from voxbus.subjects import Subjects

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


class HttpGateway:
    """What the handlers share: the bus, the model client, the limits and the model registry."""

    def __init__(self, bus: Bus, api_key: str | None = None) -> None:
        cfg = bus.config
        self.bus = bus
        self.models = ModelClient.from_bus(bus)
        self.api_key = api_key or cfg.http.api_key
        self.max_upload = int(cfg.http.max_upload)
        self.max_json = int(cfg.http.max_json)
        self.transcribe_timeout = float(cfg.http.transcribe_timeout)
        self.stt_model = cfg.stt.model or cfg.manager.defaults["stt"]
        self.started = time.time()
        self.counters = {"requests": 0, "errors": 0}  # (totals only: what is in flight is `pending`)
        self.in_flight = 0
        self.feed = DashboardFeed(bus)
        self.listen_host = cfg.http.host

    def status(self) -> ServiceStatus:
        return ServiceStatus(service="http", pending=self.in_flight, counters=dict(self.counters))

    def model_kind(self, model: str) -> str | None:
        spec = self.bus.config.models.get(model)
        return spec.kind if spec is not None else None

    def llm_model(self, name: str) -> str:
        """A voxbus LLM id; OpenAI's model names (gpt-...) and "" mean the default one."""
        if self.model_kind(name) == "llm":
            return name
        if not name or name.startswith(("gpt-", "o1", "o3", "o4", "text-davinci")) or name == "default":
            return self.bus.config.manager.defaults["llm"]
        raise ApiError(404, f"no language model {name!r} (GET /v1/models lists them)", "model_not_found", "model")

    async def require_service(self, kind: str, why: str) -> None:
        try:
            await self.bus.nc.request(Subjects.micro("PING", self.bus.subjects.service_name(kind)), b"", timeout=2.0)
        except NoRespondersError:
            raise ApiError(503, f"no {kind.upper()} service runs on this bus ({why}): start `voxbus {kind}` or "
                                f"`voxbus up`", "service_unavailable") from None
        except NatsTimeout:
            pass  # registered but busy: the request will wait its turn

    async def json_body(self, request: Request) -> dict:
        raw = await request.body()
        try:
            body = json.loads(raw or b"{}")
        except ValueError as exc:
            raise ApiError(400, f"the body is not JSON ({exc})", "invalid_json") from None
        if not isinstance(body, dict):
            raise ApiError(400, "the body must be a JSON object", "invalid_json")
        return body


async def list_models(request: Request) -> JSONResponse:
    gw: HttpGateway = request.app.state.gateway
    return JSONResponse({"object": "list", "data": [model_entry(gw, m) for m in gw.bus.config.models]})


async def get_model(request: Request) -> JSONResponse:
    gw: HttpGateway = request.app.state.gateway
    model = request.path_params["model"]
    if model not in gw.bus.config.models:
        raise ApiError(404, f"no model {model!r}", "model_not_found", "model")
    return JSONResponse(model_entry(gw, model))


def model_entry(gw: HttpGateway, model: str) -> dict:
    return {"id": model, "object": "model", "created": int(gw.started), "owned_by": "voxbus",
            "kind": gw.model_kind(model)}


async def health(request: Request) -> JSONResponse:
    gw: HttpGateway = request.app.state.gateway
    connected = gw.bus.nc.is_connected
    manager = connected and await manager_running(gw.bus)
    services = {}
    for kind in ("stt", "tts"):
        try:
            await gw.require_service(kind, "health")
            services[kind] = True
        except ApiError:
            services[kind] = False
    ok = connected and manager
    return JSONResponse({"status": "ok" if ok else "unavailable", "version": __version__, "nats": connected,
                         "manager": manager, **services}, status_code=200 if ok else 503)


async def metrics(request: Request) -> Response:
    """Prometheus text format, gathered from the whole deployment at each scrape (voxbus/metrics.py)."""
    from voxbus.metrics import CONTENT_TYPE, exposition

    return Response(await exposition(request.app.state.gateway.bus), media_type=CONTENT_TYPE)


async def api_error(request: Request, exc: Exception) -> JSONResponse:
    err = from_exception(exc)
    if err.status >= 500 and not isinstance(exc, ApiError):
        log.exception("%s %s failed", request.method, request.url.path, exc_info=exc)
    return err.response()


async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
    return ApiError(exc.status_code, str(exc.detail), "not_found" if exc.status_code == 404 else None).response()


class Guard:
    """ASGI middleware: the API key and the body limit, before a handler runs."""

    def __init__(self, app, gateway: HttpGateway) -> None:
        self.app = app
        self.gw = gateway

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        refused = self._refuse(scope, headers)
        if refused is not None:
            return await refused.response()(scope, receive, send)
        limit = self.gw.max_upload if headers.get("content-type", "").startswith("multipart/") else self.gw.max_json
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise ApiError(413, f"the request body is over {limit} bytes", "payload_too_large")
            return message

        counters = self.gw.counters
        api = scope["path"].startswith("/v1/")  # (the API's load: not the dashboard, /health, /metrics)
        counters["requests"] += api
        self.gw.in_flight += api

        async def sent(message) -> None:
            if api and message["type"] == "http.response.start" and message["status"] >= 400:
                counters["errors"] += 1
            await send(message)
        try:
            await self.app(scope, counted, sent)
        finally:
            self.gw.in_flight -= api

    def _local_host(self, host: str) -> bool:
        if not is_loopback(self.gw.listen_host):
            return True  # (listening on a wider address: the operator chose that; the key is the guard)
        name = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
        return name in ("localhost", "[::1]") or is_loopback(name)

    def _refuse(self, scope, headers: dict) -> ApiError | None:
        path = scope["path"]
        if self.gw.api_key and path.startswith(("/v1/", dashboard.API)):
            given = headers.get("authorization", "").removeprefix("Bearer ").strip()
            if not hmac.compare_digest(given.encode(), self.gw.api_key.encode()):
                return ApiError(401, "a valid API key is required (Authorization: Bearer KEY)", "invalid_api_key")
        if not self.gw.api_key and path.startswith(dashboard.API) and not self._local_host(headers.get("host", "")):
            # (no key on a loopback gateway: only a page loaded from this machine by its loopback
            # name may read the stored sessions, not one that rebound some DNS name to 127.0.0.1)
            return ApiError(403, "the dashboard of a gateway without an API key is served only as localhost or "
                                 "127.0.0.1; set --api-key to open it under other names", "forbidden_host")
        limit = self.gw.max_upload if headers.get("content-type", "").startswith("multipart/") else self.gw.max_json
        length = headers.get("content-length")
        if length and length.isdigit() and int(length) > limit:
            return ApiError(413, f"the request body is {length} bytes; this gateway takes at most {limit}",
                            "payload_too_large")
        return None


def build_app(gateway: HttpGateway) -> Starlette:
    routes = [Route("/v1/audio/transcriptions", transcriptions, methods=["POST"]),
              Route("/v1/audio/speech", speech, methods=["POST"]),
              Route("/v1/chat/completions", chat_completions, methods=["POST"]),
              Route("/v1/completions", completions, methods=["POST"]),
              Route("/v1/models", list_models, methods=["GET"]),
              Route("/v1/models/{model:path}", get_model, methods=["GET"]),
              Route("/health", health, methods=["GET"]),
              Route("/metrics", metrics, methods=["GET"]),
              *dashboard.routes()]
    # Errors a handler raises on purpose are answered inside the middleware (counted, nothing
    # re-raised to the server); `Exception` is the last resort for bugs.
    app = Starlette(routes=routes, exception_handlers={ApiError: api_error, VoxbusError: api_error,
                                                       TimeoutError: api_error, HTTPException: http_error,
                                                       Exception: api_error})
    app.state.gateway = gateway
    app.add_middleware(Guard, gateway=gateway)
    return app


@contextlib.asynccontextmanager
async def served(app, host: str, port: int) -> AsyncIterator[str]:
    """uvicorn serving `app` in this event loop until the block ends; yields its base URL (the
    real port when `port` is 0)."""
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off",
                                           access_log=False, timeout_graceful_shutdown=10))
    task = asyncio.create_task(server.serve(), name="voxbus-http")
    while not server.started:
        if task.done():
            await task  # (it failed to bind: say why)
            raise RuntimeError("the HTTP server stopped before it started")
        await asyncio.sleep(0.02)
    try:
        yield f"http://{host}:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def serving(bus: Bus, host: str, port: int, api_key: str | None = None) -> AsyncIterator[str]:
    """Serve the API until the block ends; yields its base URL."""
    gateway = HttpGateway(bus, api_key)
    gateway.listen_host = host
    async with served(build_app(gateway), host, port) as url:
        micro = await announce(bus, "http", "voxbus OpenAI-compatible API (a gateway)", url, gateway.status)
        try:
            yield url
        finally:
            gateway.feed.shutdown()  # (uvicorn waits for open responses: end the dashboards' streams)
            await micro.stop()
