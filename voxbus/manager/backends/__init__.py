"""Model backends: one module per model library, imported only when a model needs it, so a
machine without (say) Coqui TTS still serves everything else."""

from __future__ import annotations

import importlib

from voxbus.manager.backends.base import Backend, BackendError

_MODULES = {
    "llama_cpp": ("voxbus.manager.backends.llama", "LlamaBackend"),
    "faster_whisper": ("voxbus.manager.backends.whisper", "WhisperBackend"),
    "piper": ("voxbus.manager.backends.piper", "PiperBackend"),
    "coqui": ("voxbus.manager.backends.coqui", "CoquiBackend"),
}


def backend_names() -> tuple[str, ...]:
    return tuple(_MODULES)


def backend_class(name: str) -> type[Backend]:
    try:
        module_name, class_name = _MODULES[name]
    except KeyError:
        raise BackendError(f"unknown backend {name!r}; choose from {', '.join(_MODULES)}") from None
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendError(f"backend {name!r} is not installed ({exc})") from None
    return getattr(module, class_name)
