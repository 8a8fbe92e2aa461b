import numpy as np
import pytest

from voxbus.audio import float_to_pcm, pcm_to_float, pcm_to_model_input
from voxbus.errors import InvalidAudio
from voxbus.messages import AudioFormat


def tone(rate, seconds=0.5, freq=440.0):
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize("sample", ["s16le", "s32le", "f32le"])
@pytest.mark.parametrize("channels", [1, 2])
def test_round_trip_each_format(sample, channels):
    fmt = AudioFormat(rate=16000, channels=channels, sample=sample)
    x = tone(16000)
    pcm = float_to_pcm(x, 16000, fmt)
    assert len(pcm) == len(x) * fmt.frame_bytes
    back = pcm_to_float(pcm, fmt)
    assert back.shape == (len(x), channels)
    assert np.max(np.abs(back[:, 0] - x)) < 1e-3


def test_resampling_keeps_the_tone():
    x = tone(44100, 1.0)
    fmt = AudioFormat(rate=44100, channels=2, sample="f32le")
    mono16k = pcm_to_model_input(float_to_pcm(x, 44100, fmt), fmt, 16000)
    assert abs(len(mono16k) - 16000) <= 1
    spectrum = np.abs(np.fft.rfft(mono16k))
    assert abs(np.argmax(spectrum) * 16000 / len(mono16k) - 440) < 3


def test_bad_audio_is_rejected():
    fmt = AudioFormat(rate=16000, channels=2, sample="s16le")
    with pytest.raises(InvalidAudio, match="empty"):
        pcm_to_float(b"", fmt)
    with pytest.raises(InvalidAudio, match="whole number"):
        pcm_to_float(b"\x00\x01\x02", fmt)
    nan = np.array([0.0, np.nan], dtype="<f4").tobytes()
    with pytest.raises(InvalidAudio, match="NaN"):
        pcm_to_float(nan, AudioFormat(sample="f32le"))
