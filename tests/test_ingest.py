"""Audio ingest: decoding files, framing, the async-publish window, the live-source API."""

import numpy as np
import pytest
import soundfile as sf

from tests.helpers import make_config
from voxbus.bus import open_bus
from voxbus.errors import AudioFileError
from voxbus.history import stored
from voxbus.ingest import SessionPublisher, read_audio
from voxbus.messages import AudioFormat, AudioFrame, ControlEvent, SessionEnd, SessionStart, codec


@pytest.mark.parametrize("subtype,fmt,sample", [("PCM_16", "WAV", "s16le"), ("FLOAT", "WAV", "f32le"),
                                                 ("PCM_24", "WAV", "s32le"), ("PCM_16", "FLAC", "s16le"),
                                                 ("MPEG_LAYER_III", "MP3", "s16le"), ("VORBIS", "OGG", "s16le")])
def test_read_audio_keeps_rate_channels_and_integer_types(tmp_path, subtype, fmt, sample):
    audio = (np.sin(np.arange(24000)[:, None] / [7, 11]) * 0.4).astype(np.float32)
    path = tmp_path / f"a.{fmt.lower()}"
    sf.write(str(path), audio, 24000, subtype=subtype, format=fmt)
    pcm, af = read_audio(path)
    assert (af.rate, af.channels, af.sample) == (24000, 2, sample)
    assert len(pcm) % af.frame_bytes == 0 and af.duration(len(pcm)) == pytest.approx(1.0, abs=0.08)


def test_unreadable_files_are_clear_errors(tmp_path):
    (tmp_path / "text.wav").write_text("not audio")
    sf.write(str(tmp_path / "empty.wav"), np.zeros((0, 1), np.float32), 16000)
    with pytest.raises(AudioFileError, match="no such file"):
        read_audio(tmp_path / "missing.wav")
    with pytest.raises(AudioFileError, match="cannot decode audio"):
        read_audio(tmp_path / "text.wav")
    with pytest.raises(AudioFileError, match="holds no audio"):
        read_audio(tmp_path / "empty.wav")


async def read_session(bus, sid):
    frames = [(codec.decode_meta(m.headers, AudioFrame), bytes(m.data))
              async for m in stored(bus.js, bus.subjects.stream("audio"), bus.subjects.audio_in(sid))]
    events = [codec.decode(m.data, ControlEvent)
              async for m in stored(bus.js, bus.subjects.stream("ctl"), bus.subjects.session_control(sid))]
    return frames, events


async def test_publisher_frames_a_file_and_ends_with_the_last_seq(nats_server, tmp_path):
    config = make_config(nats_server.url, tmp_path, ingest={"window": 8})
    fmt = AudioFormat(rate=16000)
    pcm = (np.arange(16160) % 2000 - 1000).astype("<i2").tobytes()  # 1.01 s: 50 whole frames + a partial one
    async with open_bus(config) as bus:
        inflight = []
        pub = SessionPublisher(bus, "ing-1", on_frame=lambda n, t: inflight.append(pub.frames.js.publish_async_pending()))
        assert await pub.publish_pcm(pcm, fmt) == 51
        frames, events = await read_session(bus, "ing-1")
    assert max(inflight) <= 8  # the async-publish window bounds frames in flight
    assert [h.seq for h, _ in frames] == list(range(51))
    assert [h.offset for h, _ in frames[:3]] == [0.0, 0.02, 0.04] and frames[-1][0].offset == pytest.approx(1.0)
    assert all(len(d) == 640 for _, d in frames[:-1]) and len(frames[-1][1]) == 320
    assert b"".join(d for _, d in frames) == pcm
    assert isinstance(events[0], SessionStart) and events[0].format == fmt
    assert isinstance(events[-1], SessionEnd) and events[-1].last_seq == 50


async def test_live_source_api_takes_float_blocks_of_any_size(nats_server, tmp_path):
    config = make_config(nats_server.url, tmp_path)
    fmt = AudioFormat(rate=48000, channels=2, sample="f32le")
    rng = np.random.default_rng(1)
    audio = (rng.standard_normal((48000, 2)) * 0.1).astype(np.float32)

    async def microphone():
        i = 0
        for size in [100, 4000, 1, 9999] * 100:
            if i >= len(audio):
                return
            yield audio[i:i + size]
            i += size

    async with open_bus(config) as bus:
        n = await SessionPublisher(bus, "live-1", frame_ms=30).publish_blocks(microphone(), fmt)
        frames, events = await read_session(bus, "live-1")
    assert n == len(frames) == 34  # 1 s in 30 ms frames: 33 whole frames and a partial one
    assert all(h.format == fmt for h, _ in frames) and all(len(d) == 1440 * 8 for _, d in frames[:-1])
    assert np.array_equal(np.frombuffer(b"".join(d for _, d in frames), "<f4").reshape(-1, 2), audio)
    assert events[-1].last_seq == 33
