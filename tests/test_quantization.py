import pytest

from voxbus.errors import ConfigError
from voxbus.manager.quantization import default_quantization, resolve_quantization


def test_generic_names_map_per_backend():
    assert resolve_quantization("llama_cpp", "4-bit", "cpu") == "q4_k_m"
    assert resolve_quantization("llama_cpp", "8-bit", "cpu") == "q8_0"
    assert resolve_quantization("llama_cpp", "16-bit", "cuda") == "f16"
    assert resolve_quantization("faster_whisper", "8-bit", "cpu") == "int8"
    assert resolve_quantization("faster_whisper", "16-bit", "cuda") == "float16"


def test_native_names_pass_through():
    assert resolve_quantization("llama_cpp", "Q5_K_M", "cpu") == "q5_k_m"
    assert resolve_quantization("faster_whisper", "int8_float16", "cuda") == "int8_float16"


def test_defaults_by_kind_and_device():
    assert default_quantization("faster_whisper", "cpu") == "int8"
    assert default_quantization("faster_whisper", "cuda") == "float16"
    assert default_quantization("llama_cpp", "cpu") is None  # keep the file's own (already 4-bit)
    assert resolve_quantization("piper", None, "cpu") is None


def test_backends_without_quantization_say_so():
    with pytest.raises(ConfigError, match="has no quantization"):
        resolve_quantization("piper", "8-bit", "cpu")
    with pytest.raises(ConfigError, match="has no quantization"):
        resolve_quantization("coqui", "int8", "cpu")


def test_unknown_names_are_rejected():
    with pytest.raises(ConfigError, match="choose from"):
        resolve_quantization("llama_cpp", "q3_magic", "cpu")
    with pytest.raises(ConfigError):
        resolve_quantization("faster_whisper", "4-bit", "cpu")
