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

    def __str__(self) -> str:
        """The exact size in the largest unit that divides it ("2GiB", "8MB", "1500")."""
        for unit in ("TiB", "GiB", "MiB", "KiB", "TB", "GB", "MB", "KB"):
            size = _SIZE_UNITS[unit.lower()]
            if self and self % size == 0:
                return f"{self // size}{unit}"
        return str(int(self))

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

    def __str__(self) -> str:
        """The exact duration in the largest whole unit ("24h", "10m", "400ms", "1.5s")."""
        for unit in ("d", "h", "m", "s"):
            n = self / _DURATION_UNITS[unit]
            if self and n == int(n):
                return f"{int(n)}{unit}"
        if not self:
            return "0s"
        ms = self * 1000
        return f"{round(ms)}ms" if abs(ms - round(ms)) < 1e-6 else f"{float(self):g}s"

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
    """Config values as people write them, which parse back to the same values."""
    if isinstance(obj, (Budget, ByteSize, Duration)):
        return str(obj)
    raise NotImplementedError(f"cannot encode {type(obj).__name__}")
