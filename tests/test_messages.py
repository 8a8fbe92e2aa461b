"""Every wire Struct round-trips through JSON and rejects malformed input with a clear error."""

import inspect

import msgspec
import pytest

import voxbus.messages as m
from voxbus.errors import ProtocolError
from voxbus.messages import admin, audio, control, model, status, text

FMT = m.AudioFormat(rate=48000, channels=2, sample="f32le")
REF = m.ModelRef(id="whisper-tiny-en", version="tiny.en", fingerprint="0123456789abcdef", backend="faster_whisper")
SEG = m.Segment(start=0.0, end=1.5, text="hello")
WORD = m.Word(word="hello", start=0.1, end=0.6, probability=0.93)

EXAMPLES = {
    m.AudioFormat: FMT,
    m.AudioFrame: m.AudioFrame(format=FMT, seq=7, ts=1764000000.25, offset=0.14),
    m.SpeechChunk: m.SpeechChunk(format=FMT, seq=3, turn=1, text="Hi.", final=True),
    m.ModelRef: REF,
    m.Segment: SEG,
    m.Word: WORD,
    m.Timings: m.Timings(queue_ms=1.0, inference_ms=20.5, total_ms=22.0),
    m.Transcript: m.Transcript(session="s1", utterance=2, text="hello", start=1.0, end=2.5, segments=[SEG], words=[WORD],
                               language="en", model=REF, first_seq=50, last_seq=125),
    m.ReplyChunk: m.ReplyChunk(session="s1", turn=1, index=0, text="Hi", final=False),
    m.SayRequest: m.SayRequest(text="Hello there.", turn=2, voice="piper-joe", format=FMT, final=False,
                               speak_now=True, held=True, settle="release"),
    m.PartialTranscript: m.PartialTranscript(session="s1", utterance=2, revision=3, text="hello wor",
                                             stable="hello", start=1.0, end=1.8, closing=True,
                                             hypothesis="Hello, wor"),
    m.SessionStart: m.SessionStart(session="s1", ts=1.0, format=FMT, meta={"file": "a.wav"},
                                   output=m.AudioFormat(rate=24000, sample="f32le"), voice="piper-joe", partials=False,
                                   partial_interval=0.8),
    m.SessionEnd: m.SessionEnd(session="s1", reason="eos", last_seq=99),
    m.Interrupt: m.Interrupt(session="s1", reason="barge-in"),
    m.SessionError: m.SessionError(session="s1", code="invalid_audio", message="odd byte count", seq=4),
    m.GenerateCancel: m.GenerateCancel(request_id="r-1"),
    m.SessionTranscribed: m.SessionTranscribed(session="s1", utterances=3, last_seq=250),
    m.ModelEvent: m.ModelEvent(event="crashed", model="gemma3-270m", kind="llm", reason="worker died", pid=77,
                               signal="SIGSEGV", stderr=["Fatal Python error: Segmentation fault"]),
    m.GpuStats: m.GpuStats(index=0, name="H100", total_bytes=80, used_bytes=10, free_bytes=70, utilization=3.0),
    m.LoadedModelStats: m.LoadedModelStats(id="a", kind="stt", ram_bytes=5, inflight=1, idle_s=2.0),
    m.ResourceSnapshot: m.ResourceSnapshot(gpus=[m.GpuStats(index=0, name="g", total_bytes=1, used_bytes=0, free_bytes=1)],
                                           rss_bytes=100, models=[m.LoadedModelStats(id="a", kind="stt")], pressure=True),
    m.CacheEvent: m.CacheEvent(event="spilled", model="gemma3-270m", conversation="c1", bytes=1024),
    m.RetentionWarning: m.RetentionWarning(level="warning", stream="VOX_AUDIO", consumer="vox-stt", unacknowledged=900,
                                           headroom=40, capacity=1000, oldest_age=70000.0, max_age=86400.0,
                                           manager="vox-stt"),
    m.TranscribeRequest: m.TranscribeRequest(model="whisper-tiny-en", version="tiny.en", format=FMT, language="en", beam_size=2),
    m.TranscribeReply: m.TranscribeReply(model=REF, text="hello", segments=[SEG], words=[WORD], language="en",
                                         duration=1.5, batch_size=4),
    m.ChatMessage: m.ChatMessage(role="user", content="Hi"),
    m.SamplingOptions: m.SamplingOptions(max_tokens=16, temperature=0.0, seed=1, stop=["\n"]),
    m.GenerateRequest: m.GenerateRequest(messages=[m.ChatMessage(role="user", content="Hi")], conversation="c1"),
    m.Usage: m.Usage(prompt_tokens=5, completion_tokens=3, cached_tokens=2),
    m.GenerateTimings: m.GenerateTimings(queue_ms=1, ttft_ms=50, total_ms=90, tokens_per_s=60),
    m.GenerateChunk: m.GenerateChunk(index=0, text=" the"),
    m.GenerateDone: m.GenerateDone(model=REF, text=" the end", finish_reason="length", usage=m.Usage(completion_tokens=2)),
    m.SynthesizeRequest: m.SynthesizeRequest(text="Hello.", voice=None, format=FMT, speed=1.25),
    m.SynthesizeReply: m.SynthesizeReply(model=REF, format=FMT, duration=0.8),
    m.ModelMetrics: m.ModelMetrics(requests=3, errors=1, inference_ms_p95=12.0, errors_by_code={"overloaded": 1},
                                   queue_seconds=m.Histogram(bounds=[0.1, 1.0], counts=[1, 2], count=2, sum=0.6)),
    m.Histogram: m.Histogram(bounds=[0.005, 0.01], counts=[0, 3], count=4, sum=2.5),
    m.WorkerInfo: m.WorkerInfo(index=0, pid=4242, state="busy", rss_bytes=9, queue=2, jobs=7, crashes=1),
    m.ModelInfo: m.ModelInfo(id="a", kind="tts", backend="piper", state="loaded", ram_bytes=9, default_for=True,
                             instances=2, queue=1, max_queue=32, workers=[m.WorkerInfo(index=0, pid=1, state="idle")]),
    m.ListModelsRequest: m.ListModelsRequest(kind="llm"),
    m.ListModelsReply: m.ListModelsReply(manager="m1", models=[m.ModelInfo(id="a", kind="stt", backend="faster_whisper")]),
    m.LoadModelRequest: m.LoadModelRequest(model="a", version="1"),
    m.UnloadModelRequest: m.UnloadModelRequest(model="a"),
    m.ModelReply: m.ModelReply(manager="m1", model=m.ModelInfo(id="a", kind="stt", backend="faster_whisper")),
    m.ErrorReply: m.ErrorReply(code="overloaded", message="queue full", transient=True, retry_after=1.5),
    m.ServiceStatus: m.ServiceStatus(service="stt", instance="NUID1", healthy=False, restarts={"stt-detect": 5},
                                     sessions=12, pending=340, lag_ms=18.5, lag_max_ms=140.0,
                                     counters={"frames": 9000, "utterances": 31}),
}

UNIONS = {m.ControlEvent: (m.SessionStart, m.SessionEnd, m.Interrupt, m.SessionError, m.SessionTranscribed),
          m.AdminEvent: (m.ModelEvent, m.ResourceSnapshot, m.CacheEvent),
          m.GenerateEvent: (m.GenerateChunk, m.GenerateDone)}


def all_wire_structs():
    found = set()
    for module in (audio, text, control, admin, model, status):
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and issubclass(obj, msgspec.Struct) and obj.__module__ == module.__name__ \
                    and not name.startswith("_"):
                found.add(obj)
    return found


def test_every_wire_struct_has_an_example():
    missing = {cls.__name__ for cls in all_wire_structs()} - {cls.__name__ for cls in EXAMPLES}
    assert not missing, f"add round-trip examples for {sorted(missing)}"


@pytest.mark.parametrize("cls", sorted(EXAMPLES, key=lambda c: c.__name__), ids=lambda c: c.__name__)
def test_round_trip(cls):
    value = EXAMPLES[cls]
    data = m.encode(value)
    assert m.decode(data, cls) == value


@pytest.mark.parametrize("union", list(UNIONS), ids=lambda u: "|".join(a.__name__ for a in UNIONS[u]))
def test_tagged_unions_dispatch_on_type(union):
    for cls in UNIONS[union]:
        decoded = m.decode(m.encode(EXAMPLES[cls]), union)
        assert type(decoded) is cls and decoded == EXAMPLES[cls]


@pytest.mark.parametrize("cls", sorted(EXAMPLES, key=lambda c: c.__name__), ids=lambda c: c.__name__)
def test_malformed_input_is_rejected(cls):
    with pytest.raises(ProtocolError, match=f"malformed {cls.__name__}"):
        m.decode(b"{not json", cls)
    with pytest.raises(ProtocolError):
        m.decode(b"[1, 2, 3]", cls)
    # A wrong-typed value in any field fails, and the error names that field.
    fields = msgspec.structs.fields(cls)
    # A list holding an object and a number is no valid value for any field type used on the wire.
    for field in fields:
        doc = msgspec.to_builtins(EXAMPLES[cls])
        doc[field.name] = [{"x": 1}, 2]
        with pytest.raises(ProtocolError, match=field.name):
            m.decode(msgspec.json.encode(doc), cls)


def test_unknown_fields_are_ignored_for_evolution():
    doc = msgspec.to_builtins(EXAMPLES[m.Transcript])
    doc["added_in_a_later_version"] = 42
    assert m.decode(msgspec.json.encode(doc), m.Transcript) == EXAMPLES[m.Transcript]


def test_value_constraints():
    with pytest.raises(ProtocolError, match="rate"):
        m.decode(b'{"rate": 12, "channels": 1, "sample": "s16le"}', m.AudioFormat)
    with pytest.raises(ProtocolError, match="sample"):
        m.decode(b'{"rate": 16000, "channels": 1, "sample": "mp3"}', m.AudioFormat)
    with pytest.raises(ProtocolError, match="max_tokens"):
        m.decode(b'{"max_tokens": 0}', m.SamplingOptions)
    with pytest.raises(ProtocolError, match="type"):
        m.decode(b'{"type": "explode", "session": "s"}', m.ControlEvent)


def test_binary_messages_travel_in_the_meta_header():
    headers = m.meta_headers(EXAMPLES[m.AudioFrame])
    assert "\n" not in headers[m.META_HEADER]
    assert m.decode_meta(headers, m.AudioFrame) == EXAMPLES[m.AudioFrame]
    with pytest.raises(ProtocolError, match="missing Vox-Meta"):
        m.decode_meta({}, m.AudioFrame)


def test_audio_format_arithmetic():
    assert FMT.frame_bytes == 8
    assert FMT.duration(48000 * 8) == 1.0
