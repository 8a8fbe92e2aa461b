"""Human-friendly config values: byte sizes ("512MiB"), durations ("30s") and budgets
("60%" of what the machine has, or an absolute size). Parsed once, at config load."""

from __future__ import annotations

import re

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "kib": 1024,
    "m": 1000**2, "mb": 1000**2, "mib": 1024**2,
    "g": 1000**3, "gb": 1000**3, "gib": 1024**3,
    "t": 1000**4, "tb": 1000**4, "tib": 1024**4,
}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class ByteSize(int):
    """A number of bytes; accepts ints or strings such as "8MB", "512MiB", "2 GiB"."""

    @classmethod
    def parse(cls, value: object) -> "ByteSize":
        if isinstance(value, bool):
            raise ValueError("expected a byte size such as 512MiB")
        if isinstance(value, (int, float)):
            if value < 0:
                raise ValueError("a byte size cannot be negative")
            return cls(int(value))
        if isinstance(value, str):
            m = _SIZE_RE.match(value)
            if m and (m.group(2) or "").lower() in _SIZE_UNITS:
                return cls(int(float(m.group(1)) * _SIZE_UNITS[(m.group(2) or "").lower()]))
        raise ValueError(f"expected a byte size such as 512MiB or 2GB, got {value!r}")


class Duration(float):
    """Seconds; accepts numbers or strings such as "250ms", "30s", "10m", "1h"."""

    @classmethod
    def parse(cls, value: object) -> "Duration":
        if isinstance(value, bool):
            raise ValueError("expected a duration such as 30s")
        if isinstance(value, (int, float)):
            if value < 0:
                raise ValueError("a duration cannot be negative")
            return cls(float(value))
        if isinstance(value, str):
            m = _DURATION_RE.match(value)
            if m:
                return cls(float(m.group(1)) * _DURATION_UNITS[m.group(2) or ""])
        raise ValueError(f"expected a duration such as 250ms, 30s, 10m or 1h, got {value!r}")


class Budget:
    """A memory budget: a fraction of the device's total ("60%", 0.6) or an absolute size."""

    __slots__ = ("fraction", "absolute")

    def __init__(self, fraction: float | None = None, absolute: int | None = None) -> None:
        self.fraction = fraction
        self.absolute = absolute

    @classmethod
    def parse(cls, value: object) -> "Budget":
        if isinstance(value, Budget):
            return value
        if isinstance(value, str) and value.strip().endswith("%"):
            try:
                pct = float(value.strip()[:-1])
            except ValueError:
                raise ValueError(f"expected a percentage such as 60%, got {value!r}") from None
            if not 0 < pct <= 100:
                raise ValueError(f"a percentage budget must be in (0, 100], got {value!r}")
            return cls(fraction=pct / 100)
        if isinstance(value, float) and 0 < value <= 1:
            return cls(fraction=value)
        try:
            return cls(absolute=int(ByteSize.parse(value)))
        except ValueError:
            raise ValueError(f"expected a budget such as 60%, 0.6 or 8GiB, got {value!r}") from None

    def resolve(self, total: int) -> int:
        """Bytes allowed on a device with `total` bytes."""
        if self.fraction is not None:
            return int(total * self.fraction)
        return int(self.absolute or 0)

    def __repr__(self) -> str:
        return str(self)

    def __str__(self) -> str:
        if self.fraction is not None:
            return f"{self.fraction * 100:g}%"
        return str(self.absolute)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Budget) and (self.fraction, self.absolute) == (other.fraction, other.absolute)


CUSTOM_TYPES = {ByteSize: ByteSize.parse, Duration: Duration.parse, Budget: Budget.parse}


def dec_hook(tp: type, obj: object) -> object:
    parse = CUSTOM_TYPES.get(tp)
    if parse is None:
        raise NotImplementedError(f"unsupported config type {tp}")
    return parse(obj)


def enc_hook(obj: object) -> object:
    if isinstance(obj, Budget):
        return str(obj)
    if isinstance(obj, ByteSize):
        return int(obj)
    if isinstance(obj, Duration):
        return float(obj)
    raise NotImplementedError(f"cannot encode {type(obj).__name__}")
