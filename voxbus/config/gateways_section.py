"""The http and wyoming sections: the gateways to OpenAI-API clients and to Home Assistant."""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta

from voxbus.config.base import _Cfg
from voxbus.config.units import ByteSize, Duration


class HttpConfig(_Cfg):
    """`voxbus http`: the OpenAI-compatible API (a gateway: it loads no model)."""

    host: str = "127.0.0.1"
    """Where it listens; 127.0.0.1 keeps it to this machine (set an api_key before opening it wider)."""
    port: Annotated[int, Meta(ge=0, le=65535)] = 8000
    api_key: str | None = None
    """Requests to /v1/ must carry `Authorization: Bearer <api_key>`; None: no key asked."""
    max_upload: ByteSize = ByteSize(25 * 1024 * 1024)
    """Largest audio upload (a multipart body), as OpenAI's API: larger is refused with 413."""
    max_json: ByteSize = ByteSize(1024 * 1024)
    """Largest JSON body (chat messages, text to speak)."""
    transcribe_timeout: Duration = Duration(600)
    """An upload not transcribed within this long gets a 504."""


class WyomingConfig(_Cfg):
    """`voxbus wyoming`: a Wyoming server for Home Assistant (a gateway: it loads no model)."""

    uri: str = "tcp://127.0.0.1:10300"
    zeroconf: bool = False
    """Announce the server with zeroconf (_wyoming._tcp), so Home Assistant finds it by itself."""
    name: str = "voxbus"
    """The name Home Assistant shows for this server."""
