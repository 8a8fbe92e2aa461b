"""The base of every configuration section."""

from __future__ import annotations

from msgspec import Struct


class _Cfg(Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """Frozen: a configuration is decoded once and read everywhere; change it by building a new
    one (load_config overrides, msgspec.structs.replace), never by assignment."""
