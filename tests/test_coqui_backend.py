"""CoquiBackend against a small random-weight VITS built on the spot (no model hub)."""

from __future__ import annotations

import json
import weakref

import numpy as np
import pytest

import TTS  # noqa: F401,E402 (the `coqui` extra, which the test script installs: missing is an error, not a skip)

from voxbus.manager.backends.base import BackendError, LoadSpec
from voxbus.manager.backends.coqui import CoquiBackend
from tests.coqui_model import build_random_vits


def test_coqui_backend_synthesizes_and_unloads(tmp_path):
    model_path, config_path = build_random_vits(tmp_path / "vits")
    expected_rate = json.loads(config_path.read_text())["audio"]["sample_rate"]

    backend = CoquiBackend()
    backend.load(LoadSpec(model_id="tiny-vits", path=model_path, config_path=config_path))
    assert backend.footprint_hint() == model_path.stat().st_size
    assert backend.voices() == []  # single-speaker

    result = backend.synthesize("Hello from voxbus.", None, {})
    audio = result.audio
    assert result.sample_rate == expected_rate
    assert isinstance(audio, np.ndarray) and audio.dtype == np.float32 and audio.ndim == 1
    assert len(audio) > 0.1 * result.sample_rate
    assert np.all(np.isfinite(audio))
    assert np.abs(audio).max() <= 1.0

    # speed scales the predicted durations (random weights, but the duration predictor is deterministic)
    fast = backend.synthesize("Hello from voxbus.", None, {"speed": 2.0}).audio
    assert 0 < len(fast) < len(audio)

    with pytest.raises(BackendError):
        backend.synthesize("", None, {})
    with pytest.raises(BackendError):
        backend.synthesize("   ", None, {})
    with pytest.raises(BackendError):
        backend.synthesize("Hello.", "no-such-speaker", {})

    model_ref = weakref.ref(backend._tts)
    backend.unload()
    assert model_ref() is None  # the weights are actually freed, not just unreferenced by us
    assert backend.footprint_hint() == 0
    with pytest.raises(BackendError):
        backend.synthesize("Hello.", None, {})


def test_coqui_backend_rejects_missing_files(tmp_path):
    backend = CoquiBackend()
    with pytest.raises(BackendError):
        backend.load(LoadSpec(model_id="missing", path=tmp_path / "nope.pth"))
    model_path, _ = build_random_vits(tmp_path / "vits")
    with pytest.raises(BackendError):
        backend.load(LoadSpec(model_id="no-config", path=model_path, config_path=tmp_path / "nope.json"))


def test_coqui_backend_selects_speakers(tmp_path):
    model_path, config_path = build_random_vits(tmp_path / "vits", speakers=["alice", "bob"])
    backend = CoquiBackend()
    backend.load(LoadSpec(model_id="tiny-vits-ms", path=model_path.parent))  # directory form
    assert backend.voices() == ["alice", "bob"]
    for voice in ("bob", None):  # None falls back to the first speaker
        audio = backend.synthesize("Hello from voxbus.", voice, {}).audio
        assert audio.dtype == np.float32 and audio.ndim == 1 and len(audio) > 0
    with pytest.raises(BackendError):
        backend.synthesize("Hello.", "carol", {})
    backend.unload()
