"""Test helpers shared by the model tests."""

from __future__ import annotations

import asyncio
import re
import sys
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

import msgspec
import pytest

from voxbus.bus import Bus, open_bus
from voxbus.config import Config, EmbeddedServerConfig, load_config
from voxbus.config.loader import deep_merge
from voxbus.manager import ModelManager


def embedded_config() -> EmbeddedServerConfig:
    """A test server: random client and monitoring ports."""
    return EmbeddedServerConfig(port=0, monitor_port=0)


def make_config(url: str, cache_dir: Path, **overrides: Any) -> Config:
    """The default config on the test's server, caches under a temp dir, plus overrides."""
    over = deep_merge({"nats": {"url": url}, "manager": {"cache_dir": str(cache_dir)}}, overrides)
    return load_config(env={}, overrides=over)


@asynccontextmanager
async def running_manager(config: Config, manager_id: str = "test-manager", *,
                          expect_crashes: bool = False) -> AsyncIterator[tuple[Bus, ModelManager]]:
    """A ModelManager in this process. A model worker that crashes while it runs fails the test
    loudly, naming the model, how the worker died and its last stderr lines (unless the test
    injects crashes itself)."""
    async with open_bus(config, name=manager_id) as bus:
        async with ModelManager(bus, manager_id=manager_id) as manager:
            yield bus, manager
            await manager.pool.loader.settle()
            crashes = list(manager.pool.loader.crash_log)
    if crashes and not expect_crashes:
        pytest.fail("model worker crashed during the test: " + "; ".join(
            f"{model}: pid {e.pid} {e.reason}; stderr: {' | '.join(e.stderr[-8:]) or '(none)'}" for model, e in crashes),
            pytrace=False)


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate: word-level edit distance over reference length."""
    ref, hyp = words(reference), words(hypothesis)
    d = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, d[0] = d[0], i
        for j, h in enumerate(hyp, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (r != h))
    return d[len(hyp)] / max(len(ref), 1)


def to_builtins(obj: Any) -> Any:
    return msgspec.to_builtins(obj)


async def run_voxbus(*args: str, timeout: float = 300) -> tuple[int, str, str]:
    """Run the `voxbus` command as a user would, in a child process: (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "voxbus", *args,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode, out.decode(), err.decode()
