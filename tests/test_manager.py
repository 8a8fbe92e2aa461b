"""The ModelManager with the real bundled models, through the model client, on a real server."""

import asyncio

import msgspec
import numpy as np
import pytest
import pytest_asyncio

from voxbus.client import ModelClient
from voxbus.errors import (
    BadRequest, InvalidAudio, PayloadTooLarge, UnknownModel, UnsupportedFormat, VersionMismatch, WrongKind,
)
from voxbus.messages import AudioFormat, GenerateChunk, GenerateDone, ModelEvent, ResourceSnapshot, decode
from voxbus.history import stored as stored_msgs
from voxbus.server import NatsServer
from voxbus.subjects import Subjects
from tests.helpers import delivered, embedded_config, make_config, running_manager, wer

pytestmark = [pytest.mark.models, pytest.mark.asyncio(loop_scope="module")]

SENTENCE = "The quick brown fox jumps over the lazy dog near the quiet river bank."


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("manager")
    async with NatsServer(embedded_config(), store_dir=tmp / "js") as server:
        config = make_config(server.url, tmp / "cache", manager={"max_request_bytes": "2MB"})
        async with running_manager(config) as (bus, manager):
            yield bus, manager, ModelClient.from_bus(bus)


async def test_synthesize_then_transcribe_round_trips_the_sentence(stack):
    bus, manager, client = stack
    pcm, meta = await client.synthesize(SENTENCE)
    assert meta.model.id == "piper-joe" and meta.model.fingerprint and meta.format.rate == 22050
    assert meta.duration > 1.0 and abs(len(pcm) / 2 / 22050 - meta.duration) < 0.001
    reply = await client.transcribe(pcm, meta.format)
    assert wer(SENTENCE, reply.text) <= 0.1, reply.text
    assert reply.model.id == "whisper-tiny-en" and reply.model.version == "tiny.en" and reply.model.fingerprint
    assert reply.segments and reply.segments[-1].end <= reply.duration + 0.5


async def test_synthesize_in_a_requested_format(stack):
    _, _, client = stack
    fmt = AudioFormat(rate=16000, channels=2, sample="f32le")
    pcm, meta = await client.synthesize("Testing the microphone again.", format=fmt)
    assert meta.format == fmt and len(pcm) % fmt.frame_bytes == 0
    samples = np.frombuffer(pcm, dtype="<f4").reshape(-1, 2)
    assert np.array_equal(samples[:, 0], samples[:, 1]) and np.abs(samples).max() > 0.05
    reply = await client.transcribe(pcm, fmt)  # any rate / channels / type is normalised
    assert wer("Testing the microphone again.", reply.text) <= 0.25, reply.text


async def test_generate_streams_tokens_then_done(stack):
    _, _, client = stack
    events = [e async for e in client.generate("The capital of France is", max_tokens=12, temperature=0.0)]
    chunks = [e for e in events if isinstance(e, GenerateChunk)]
    done = events[-1]
    assert isinstance(done, GenerateDone) and len(chunks) >= 2
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert "".join(c.text for c in chunks) == done.text
    assert "Paris" in done.text or "France" in done.text
    assert done.usage.completion_tokens == len(chunks) and done.finish_reason == "length"
    assert done.timings.ttft_ms > 0 and done.timings.tokens_per_s > 0 and done.model.id == "gemma3-270m"
    again = await client.complete("The capital of France is", max_tokens=12, temperature=0.0)
    assert again.text == done.text  # greedy is deterministic


async def test_chat_messages_use_the_model_template(stack):
    _, _, client = stack
    done = await client.complete(messages=[{"role": "user", "content": "Write one word: hello"}],
                                 max_tokens=8, temperature=0.0)
    assert done.finish_reason in ("stop", "length") and done.usage.prompt_tokens > 5


async def test_list_models_reports_state_memory_and_metrics(stack):
    _, manager, client = stack
    await client.load("piper-joe")
    reply = await client.list_models()
    assert reply.manager == manager.id
    by_id = {m.id: m for m in reply.models}
    assert set(by_id) == {"gemma3-270m", "whisper-tiny-en", "piper-joe"}
    piper = by_id["piper-joe"]
    assert piper.state == "loaded" and piper.ram_bytes > 0 and piper.default_for and piper.fingerprint
    assert piper.quantization == "as shipped" and piper.metrics.load_ms > 0
    assert by_id["whisper-tiny-en"].quantization == ("float16" if manager.resources.has_gpu else "int8")
    only_llm = await client.list_models(kind="llm")
    assert [m.id for m in only_llm.models] == ["gemma3-270m"]


@pytest.mark.parametrize("call, error", [
    (lambda c: c.transcribe(b"\x00\x01" * 800, AudioFormat(), model="nope"), UnknownModel),
    (lambda c: c.transcribe(b"\x00\x01" * 800, AudioFormat(), model="piper-joe"), WrongKind),
    (lambda c: c.transcribe(b"\x00\x01" * 800, AudioFormat(), version="large-v3"), VersionMismatch),
    (lambda c: c.transcribe(b"", AudioFormat()), InvalidAudio),
    (lambda c: c.transcribe(b"\x00\x01\x02", AudioFormat()), InvalidAudio),
    (lambda c: c.transcribe(np.full(800, np.nan, dtype="<f4").tobytes(), AudioFormat(sample="f32le")), InvalidAudio),
    (lambda c: c.transcribe(b"\x00" * 3_000_000, AudioFormat()), PayloadTooLarge),
    (lambda c: c.complete(max_tokens=4), BadRequest),
    (lambda c: c.complete("x", messages=[{"role": "user", "content": "y"}]), BadRequest),
    (lambda c: c.synthesize("   "), BadRequest),
    (lambda c: c.synthesize("Hello.", voice="nobody"), BadRequest),
    (lambda c: c.load("nope"), UnknownModel),
], ids=["unknown-model", "wrong-kind", "version", "empty-audio", "odd-bytes", "nan-audio", "oversized",
        "no-prompt", "prompt-and-messages", "blank-text", "unknown-voice", "load-unknown"])
async def test_bad_input_gets_a_typed_error_and_the_manager_keeps_serving(stack, call, error):
    _, _, client = stack
    with pytest.raises(error) as info:
        await call(client)
    assert not info.value.transient and info.value.message
    pcm, meta = await client.synthesize("Still here.")
    assert len(pcm) > 0


async def test_malformed_requests_on_the_wire(stack):
    bus, _, client = stack
    subject = bus.subjects.model("llm", "generate")
    with pytest.raises(BadRequest, match="malformed GenerateRequest"):
        await client.caller.request(subject, b"{not json")
    with pytest.raises(BadRequest, match="max_tokens"):
        await client.caller.request(subject, b'{"prompt": "x", "options": {"max_tokens": -5}}')
    with pytest.raises(BadRequest, match="missing Vox-Meta"):
        await client.caller.request(bus.subjects.model("stt", "transcribe"), b"\x00\x00")
    with pytest.raises(UnsupportedFormat.__mro__[1], match="sample"):
        await client.caller.request(bus.subjects.model("stt", "transcribe"), b"\x00\x00",
                                    {"Vox-Meta": '{"format": {"rate": 16000, "sample": "mp3"}}'})


async def test_concurrent_first_requests_cause_one_load(stack):
    bus, manager, client = stack
    await client.unload("whisper-tiny-en")
    events = []

    async def collect(msg):
        events.append(decode(msg.data, ModelEvent))

    sub = await bus.nc.subscribe(bus.subjects.admin("model"), cb=collect)
    await bus.nc.flush()
    pcm, meta = await client.synthesize("One load only.")
    replies = await asyncio.gather(*(client.transcribe(pcm, meta.format) for _ in range(4)))
    await delivered(bus, manager)
    await sub.unsubscribe()
    loads = [e for e in events if e.model == "whisper-tiny-en" and e.event == "loading"]
    assert len(loads) == 1, events
    assert len({r.text for r in replies}) == 1


async def test_micro_service_is_discoverable(stack):
    bus, manager, client = stack
    reply = await bus.nc.request(Subjects.micro("INFO", bus.subjects.service_name()), b"", timeout=5)
    info = msgspec.json.decode(reply.data)
    assert info["metadata"]["manager"] == manager.id
    assert {e["subject"] for e in info["endpoints"]} >= {"vox.model.stt.transcribe", "vox.model.llm.generate",
                                                        "vox.model.tts.synthesize", "vox.model.admin.list"}
    stats = msgspec.json.decode((await bus.nc.request(Subjects.micro("STATS", bus.subjects.service_name()), b"", timeout=5)).data)
    by_name = {e["name"]: e for e in stats["endpoints"]}
    assert by_name["tts-synthesize"]["num_requests"] > 0 and by_name["stt-transcribe"]["num_errors"] > 0


async def test_resource_snapshots_are_broadcast_and_stored(stack):
    bus, manager, client = stack
    await client.load("piper-joe")  # this test's own precondition, whatever ran before it
    snap = await asyncio.to_thread(manager.snapshot)
    await manager.events.snapshot(snap)
    # The manager's own periodic snapshots go to the same subject: find ours among them.
    found = [decode(m.data, ResourceSnapshot)
             async for m in stored_msgs(bus.js, bus.subjects.stream("admin"), bus.subjects.admin("resources"))]
    (stored,) = [s for s in found if s.ts == snap.ts]
    assert stored.rss_bytes > 0 and stored.ram_budget_bytes > 0 and stored.manager == manager.id
    assert len(stored.gpus) == len(manager.resources.gpus())  # none without a GPU: all runs on the CPU
    assert {m.id for m in stored.models} >= {"piper-joe"}
