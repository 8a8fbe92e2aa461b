"""Per-model quantization: config names (generic "4-bit"/"8-bit"/"16-bit" or a backend's own)
mapped to what each backend understands, with defaults by kind and size.

Defaults follow the original system: 4-bit for small LLMs (the bundled GGUF already is),
8-bit in general (faster-whisper int8 on CPU), 16-bit where precision matters (float16 Whisper
on a GPU). Piper and Coqui have no quantization: they run as shipped, and asking for one is an
error that says so.
"""

from __future__ import annotations

from voxbus.errors import ConfigError

GENERIC = {"4-bit", "8-bit", "16-bit", "32-bit"}

_BY_BACKEND: dict[str, dict[str, str]] = {
    "llama_cpp": {"4-bit": "q4_k_m", "8-bit": "q8_0", "16-bit": "f16", "32-bit": "f32"},
    "faster_whisper": {"8-bit": "int8", "16-bit": "float16", "32-bit": "float32"},
}
_NATIVE: dict[str, tuple[str, ...]] = {
    "llama_cpp": ("f32", "f16", "bf16", "q8_0", "q5_k_m", "q4_k_m", "q4_0"),
    "faster_whisper": ("int8", "int8_float32", "int8_float16", "int16", "float16", "bfloat16", "float32"),
}


def has_quantization(backend: str) -> bool:
    return backend in _NATIVE


def default_quantization(backend: str, device: str) -> str | None:
    """None keeps what the file holds (the bundled GGUF is already Q4_K_M: a small LLM)."""
    if backend == "faster_whisper":
        return "float16" if device == "cuda" else "int8"
    return None


def resolve_quantization(backend: str, requested: str | None, device: str) -> str | None:
    """The backend-native name to load with, or None for 'as shipped'."""
    if requested is None or requested in ("", "auto", "default"):
        return default_quantization(backend, device)
    name = requested.lower()
    if not has_quantization(backend):
        raise ConfigError(f"backend {backend!r} has no quantization; remove `quantization: {requested}` for this model")
    if name in GENERIC:
        mapped = _BY_BACKEND[backend].get(name)
        if mapped is None:
            raise ConfigError(f"backend {backend!r} has no {name} quantization")
        return mapped
    if name not in _NATIVE[backend]:
        raise ConfigError(f"backend {backend!r} has no quantization {requested!r}; choose from "
                         f"{', '.join(sorted(GENERIC & set(_BY_BACKEND[backend])) + list(_NATIVE[backend]))}")
    return name
