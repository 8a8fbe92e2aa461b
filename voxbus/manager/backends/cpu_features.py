"""What this CPU can do, read at run time, and the choices that depend on it (pure functions).

llama.cpp's CPU backend offers "extra buffer types" for the weights: repacked layouts for faster
matrix kernels and, on Intel CPUs with AMX (Sapphire Rapids and later), AMX tiles. Built from
source by `pip install llama-cpp-python` on such a CPU, the AMX path segfaults in
ggml_backend_amx_mul_mat on the first generation with the bundled Gemma GGUF (ggml-org/llama.cpp
#20824). Turning the extra buffer types off (`use_extra_bufts = False`) avoids it; elsewhere they
stay on, because there they are the faster choice (docs/BENCHMARKS.md). One install then works
on both kinds of machine: the decision is taken where the model loads, from /proc/cpuinfo.
"""

from __future__ import annotations

from pathlib import Path

AMX_FLAGS = frozenset({"amx_tile", "amx_int8", "amx_bf16", "amx_fp16", "amx_complex"})


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The feature flags of the first CPU in /proc/cpuinfo (empty where there is no such file)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return frozenset()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def has_amx(flags: frozenset[str]) -> bool:
    return bool(flags & AMX_FLAGS)


def llama_extra_buffers(flags: frozenset[str], override: bool | None = None) -> bool:
    """Whether llama.cpp may use its extra weight buffer types on this CPU.

    `override` is the model's `options.use_extra_bufts` from voxbus.yaml, when set: the operator's
    word wins (for instance after a llama-cpp-python build with the AMX kernels fixed)."""
    if override is not None:
        return bool(override)
    return not has_amx(flags)
