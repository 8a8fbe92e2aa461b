"""JSON encoding of wire Structs: one shared encoder, one cached decoder per type."""

from __future__ import annotations

from typing import Any, Mapping, TypeVar

import msgspec

from voxbus.errors import ProtocolError
from voxbus.messages.headers import META as META_HEADER


T = TypeVar("T")

_encoder = msgspec.json.Encoder()
_decoders: dict[Any, msgspec.json.Decoder] = {}


def encode(obj: Any) -> bytes:
    return _encoder.encode(obj)


def decoder(tp: Any) -> msgspec.json.Decoder:
    dec = _decoders.get(tp)
    if dec is None:
        dec = _decoders[tp] = msgspec.json.Decoder(tp)
    return dec


def decode(data: bytes | str, tp: type[T]) -> T:
    """Decode and validate; any failure becomes ProtocolError naming the bad field."""
    try:
        return decoder(tp).decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        name = getattr(tp, "__name__", str(tp))
        raise ProtocolError(f"malformed {name}: {exc}") from None


def meta_headers(obj: Any, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    headers = {META_HEADER: _encoder.encode(obj).decode()}
    if extra:
        headers.update(extra)
    return headers


def decode_meta(headers: Mapping[str, str] | None, tp: type[T]) -> T:
    raw = (headers or {}).get(META_HEADER)
    if raw is None:
        name = getattr(tp, "__name__", str(tp))
        raise ProtocolError(f"missing {META_HEADER} header for {name}")
    return decode(raw, tp)
