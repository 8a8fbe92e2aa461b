"""Speech out: the TTS service and `voxbus say`, interrupts, and the assistant turning a
transcript into a streamed, spoken reply. Real server, real manager and models."""

import asyncio
import time

import numpy as np
import pytest
import pytest_asyncio
import soundfile as sf

from tests.helpers import embedded_config, make_config, run_voxbus, running_manager, until, wer
from voxbus.assistant import Assistant
from voxbus.client import ModelClient
from voxbus.messages import (
    AudioFormat, GenerateChunk, GenerateDone, Interrupt, PartialTranscript, ReplyChunk, SayRequest, SessionStart,
    SpeechChunk, Transcript, codec,
)
from voxbus.server import NatsServer
from voxbus.tts import TtsService

pytestmark = [pytest.mark.models, pytest.mark.asyncio(loop_scope="module")]

TTS: list[TtsService] = []  # the module's TTS service, for the test that looks inside it
LONG_TEXT = " ".join(f"This is sentence number {w} of a long announcement that keeps going." for w in
                     ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tts")
    from tests.coqui_model import build_random_vits  # the coqui extra: the test script installs it

    model_path, config_path = build_random_vits(tmp / "vits")
    models = {"coqui-test": {"kind": "tts", "backend": "coqui",
                             "source": {"path": str(model_path), "config": str(config_path)}}}
    async with NatsServer(embedded_config(), store_dir=tmp / "js") as server:
        config = make_config(server.url, tmp / "cache", models=models,
                             assistant={"temperature": 0.0, "max_tokens": 24})
        async with running_manager(config) as (bus, manager):
            async with TtsService(bus) as tts, Assistant(bus) as assistant:
                TTS.append(tts)
                yield server, bus, ModelClient.from_bus(bus), assistant, tmp



async def test_say_writes_a_wav_whose_transcription_matches(stack):
    server, bus, client, _, tmp = stack
    text = "Please remember to water the plants in the garden before you leave."
    out = tmp / "say.wav"
    rc, stdout, err = await run_voxbus("say", text, "-o", str(out), "--nats", server.url)
    assert rc == 0, err
    audio, rate = sf.read(str(out), dtype="int16")
    assert rate == 22050 and len(audio) / rate > 1.5
    reply = await client.transcribe(audio.tobytes(), AudioFormat(rate=rate))
    assert wer(text, reply.text) <= 0.1, reply.text
    out16 = tmp / "say16.wav"
    rc, stdout, err = await run_voxbus("say", text, "-o", str(out16), "--rate", "16000", "--sample", "f32le",
                                   "--nats", server.url)
    info = sf.info(str(out16))
    assert rc == 0 and info.samplerate == 16000 and info.subtype == "FLOAT", err


async def test_a_coqui_voice_works_through_the_same_path(stack):
    server, bus, client, _, tmp = stack
    out = tmp / "coqui.wav"
    rc, stdout, err = await run_voxbus("say", "Hello from a Coqui voice.", "--voice", "coqui-test", "-o", str(out),
                                   "--nats", server.url)
    assert rc == 0, err
    audio, rate = sf.read(str(out), dtype="int16")
    assert rate == 16000 and len(audio) > 1600 and np.abs(audio).max() > 0  # random weights: noise, not words


async def collect_chunks(bus, sid):
    got: list[tuple[float, SpeechChunk, int]] = []

    async def on_chunk(msg):
        got.append((time.monotonic(), codec.decode_meta(msg.headers, SpeechChunk), len(msg.data)))

    return got, await bus.nc.subscribe(bus.subjects.audio_out(sid), cb=on_chunk)


async def test_interrupt_stops_speech_of_that_session_only(stack):
    _, bus, client, _, _ = stack
    got_a, sub_a = await collect_chunks(bus, "tts-a")
    got_b, sub_b = await collect_chunks(bus, "tts-b")
    for sid in ("tts-a", "tts-b"):
        await bus.js.publish(bus.subjects.say(sid), codec.encode(SayRequest(text=LONG_TEXT, final=True)))
    while not got_a:
        await asyncio.sleep(0.005)
    t_int = time.monotonic()
    await bus.nc.publish(bus.subjects.control("tts-a", "interrupt"), codec.encode(Interrupt(session="tts-a")))
    for _ in range(600):
        if any(c.final for _, c, _ in got_b):
            break
        await asyncio.sleep(0.05)
    await sub_a.unsubscribe()
    await sub_b.unsubscribe()
    late = [t - t_int for t, c, n in got_a if n and t - t_int > 0.1]
    assert not late, f"audio of the interrupted session kept coming {late}s after the interrupt"
    spoken_b = [c.text for _, c, _ in got_b if c.text]
    assert len(spoken_b) == 10 and got_b[-1][1].final  # the other session said all of it
    assert [c.seq for _, c, _ in got_b] == list(range(len(got_b)))


async def test_generation_stops_on_interrupt_and_when_the_caller_leaves(stack):
    _, bus, client, _, _ = stack
    stream = client.generate("Here is a very long story about a dragon. Once upon a time", session="gen-a",
                             max_tokens=400, temperature=0.0)
    chunks = 0
    t_int = None
    async for event in stream:
        if isinstance(event, GenerateChunk):
            chunks += 1
            if chunks == 5:
                t_int = time.monotonic()
                await bus.nc.publish(bus.subjects.control("gen-a", "interrupt"), codec.encode(Interrupt(session="gen-a")))
        elif isinstance(event, GenerateDone):
            done, t_done = event, time.monotonic()
    assert done.finish_reason == "cancelled" and done.usage.completion_tokens < 400
    assert t_done - t_int < 0.1, f"generation ran {t_done - t_int:.3f}s past the interrupt"
    # A caller that stops listening frees the model at once for the next request.
    async for event in client.generate("Another long story begins here:", max_tokens=400, temperature=0.0):
        break
    t0 = time.monotonic()
    quick = await client.complete("Hi", max_tokens=2, temperature=0.0)
    assert time.monotonic() - t0 < 1.5 and quick.timings.queue_ms < 500


async def test_assistant_streams_a_reply_and_speaks_it(stack):
    _, bus, client, assistant, _ = stack
    sid = "asst-1"
    replies: list[ReplyChunk] = []

    async def on_reply(msg):
        replies.append(codec.decode(msg.data, ReplyChunk))

    got, sub = await collect_chunks(bus, sid)
    rsub = await bus.nc.subscribe(bus.subjects.reply(sid), cb=on_reply)
    # A session asks for the assistant in its start event; this one did not, so it gets no reply.
    await bus.js.publish(bus.subjects.transcript("no-asst"), codec.encode(
        Transcript(session="no-asst", utterance=0, text="Is anybody there?", start=0.0, end=1.0)))
    await bus.js.publish(bus.subjects.control(sid, "start"), codec.encode(SessionStart(session=sid, assistant=True)))
    for text in ("What color is the sky?", "And the grass?"):
        turn = len([r for r in replies if r.final])
        t = Transcript(session=sid, utterance=turn, text=text, start=0.0, end=1.0)
        await bus.js.publish(bus.subjects.transcript(sid), codec.encode(t), headers={"Nats-Msg-Id": f"{sid}:{turn}"})
        for _ in range(600):
            if any(c.final and c.turn == turn for _, c, _ in got) and any(r.final and r.turn == turn for r in replies):
                break
            await asyncio.sleep(0.05)
    await sub.unsubscribe()
    await rsub.unsubscribe()
    for turn in (0, 1):
        text = "".join(r.text for r in replies if r.turn == turn)
        assert text.strip() and [r.index for r in replies if r.turn == turn] == list(range(len(
            [r for r in replies if r.turn == turn])))
        assert any(n for _, c, n in got if c.turn == turn)  # spoken
    times = assistant.times[sid, 1]
    assert times.first_token_at and times.done_at >= times.first_token_at
    assert "no-asst" in assistant.silent and "no-asst" not in assistant.conversations


async def test_speech_comes_in_the_format_and_voice_the_session_asked_for(stack):
    _, bus, client, _, _ = stack
    sid, wanted = "fmt-1", AudioFormat(rate=16000, channels=2, sample="s32le")
    start = SessionStart(session=sid, output=wanted, voice="piper-joe")
    await bus.js.publish(bus.subjects.control(sid, "start"), codec.encode(start))
    got, sub = await collect_chunks(bus, sid)
    await bus.js.publish(bus.subjects.say(sid), codec.encode(SayRequest(text="Testing the output format.")))
    for _ in range(300):
        if got and got[-1][1].final:
            break
        await asyncio.sleep(0.05)
    await sub.unsubscribe()
    audio = [c for _, c, n in got if n]
    assert audio and all(c.format == wanted for c in audio)
    assert all(n % wanted.frame_bytes == 0 for _, c, n in got)


async def test_a_stray_control_character_does_not_cost_its_sentence(stack):
    """The manager refuses control characters (a NUL crashed the phonemizer); the TTS service
    speaks around them, so one stray byte in a reply is not a lost sentence."""
    _, bus, client, _, _ = stack
    from voxbus.messages import SessionError

    sid = "ctl-char"
    errors = []

    async def on_error(msg):
        errors.append(codec.decode(msg.data, SessionError))

    esub = await bus.nc.subscribe(bus.subjects.control(sid, "error"), cb=on_error)
    got, sub = await collect_chunks(bus, sid)
    await bus.js.publish(bus.subjects.say(sid), codec.encode(SayRequest(text="Hello\x00 there, my \x1b friend.", final=True)))
    for _ in range(300):
        if got and got[-1][1].final:
            break
        await asyncio.sleep(0.05)
    await sub.unsubscribe()
    await esub.unsubscribe()
    assert sum(n for _, _, n in got) > 0 and not errors, errors


async def test_chunk_numbers_go_on_after_an_idle_session_is_forgotten(stack):
    _, bus, _, _, _ = stack
    (tts,) = TTS
    sid = "idle-then-more"
    got, sub = await collect_chunks(bus, sid)
    idle, tts.idle = tts.idle, 0.3
    try:
        for turn, text in enumerate(("The first thing to say.", "And one more thing, later.")):
            await bus.js.publish(bus.subjects.say(sid), codec.encode(SayRequest(text=text, turn=turn, final=True)))
            await until(lambda: got and got[-1][1].final and got[-1][1].turn == turn, 60, f"turn {turn} spoken")
            await until(lambda: sid not in tts.sessions, 10, "the idle session forgotten")
    finally:
        tts.idle = idle
        await sub.unsubscribe()
    seqs = [c.seq for _, c, _ in got]
    assert {c.turn for _, c, _ in got} == {0, 1}
    assert seqs == list(range(len(seqs))), seqs  # one numbering for the session, never from 0 again


async def test_a_deleted_tts_or_assistant_consumer_is_created_again_where_it_was(stack):
    """Someone deletes the TTS's and the assistant's durable consumers: each is bound again at the
    floor it had recorded (not at NEW), and a say request sent meanwhile is spoken."""
    _, bus, _, assistant, _ = stack
    tts, s = TTS[0], bus.subjects
    for service in (tts, assistant):
        await service._check_consumers()  # (each records its floor every few seconds anyway)
    await bus.js.delete_consumer(s.stream("text"), s.consumer("tts"))
    await bus.js.delete_consumer(s.stream("text"), s.consumer("assistant"))
    got, sub = await collect_chunks(bus, "tts-rebound")
    await bus.js.publish(s.say("tts-rebound"), codec.encode(SayRequest(text="Still here after all.", final=True)))
    await until(lambda: got and got[-1][1].final, 30, "the say request sent while the consumer was gone")
    await sub.unsubscribe()
    kept = [k for service in (tts, assistant) for k in service._subs if hasattr(k, "rebound")]
    assert sorted(k.durable for k in kept if k.rebound == 1) == ["vox-assistant", "vox-tts"]
    assert sum(1 for _, c, _ in got if c.text) == 1


async def test_a_held_turn_is_spoken_only_once_released_and_a_discarded_one_never(stack):
    """SayRequest.held: the TTS synthesizes and keeps the audio; `release` publishes it at once,
    in order before the rest of the turn; `discard` drops it and the turn number is used again."""
    _, bus, client, _, _ = stack
    tts = TTS[0]
    got, sub = await collect_chunks(bus, "held-1")
    say = lambda sid, **kw: bus.js.publish(bus.subjects.say(sid), codec.encode(SayRequest(**kw)))  # noqa: E731
    await say("held-1", text="Hello there, this part waits", turn=0, held=True, final=False, speak_now=True)
    await until(lambda: "held-1" in tts.sessions and tts.sessions["held-1"].held_audio.get(0), 60, "the held audio")
    await asyncio.sleep(0.3)
    assert not got, "held audio was published"
    await say("held-1", text="", turn=0, final=False, settle="release")
    await say("held-1", text="and then the rest is spoken.", turn=0, final=True)
    await until(lambda: any(c.final for _, c, _ in got), 60, "the turn's end")
    texts = [c.text for _, c, _ in got if c.text]
    assert texts == ["Hello there, this part waits", "and then the rest is spoken."], texts
    assert [c.seq for _, c, _ in got] == list(range(len(got)))
    await sub.unsubscribe()

    got, sub = await collect_chunks(bus, "held-2")
    await say("held-2", text="Words nobody should hear", turn=0, held=True, final=False, speak_now=True)
    await until(lambda: "held-2" in tts.sessions and tts.sessions["held-2"].held_audio.get(0), 60, "the held audio")
    await say("held-2", text="", turn=0, final=False, settle="discard")
    await say("held-2", text="Something else entirely.", turn=0, final=True)
    await until(lambda: any(c.final for _, c, _ in got), 60, "the turn's end")
    assert [c.text for _, c, _ in got if c.text] == ["Something else entirely."]
    assert not tts.sessions["held-2"].held_audio
    await sub.unsubscribe()


async def test_the_assistant_starts_on_a_closing_partial_and_adopts_or_drops_it(stack):
    """A closing partial (the STT's early final) starts the reply; the final saying the same
    adopts it (its held first audio released), a final saying more drops it (the held audio
    discarded, the reply made anew): either way one reply per turn, each spoken once."""
    _, bus, client, assistant, _ = stack
    for sid, early, final, wait in (("spec-1", "What color is the sky?", "What color is the sky?", True),
                                    ("spec-2", "What color is", "What color is the grass in spring?", True),
                                    ("spec-3", "Where is the moon?", "Where is the moon?", False)):
        before = dict(assistant.speculated)
        replies: list[ReplyChunk] = []

        async def on_reply(msg):
            replies.append(codec.decode(msg.data, ReplyChunk))

        got, sub = await collect_chunks(bus, sid)
        rsub = await bus.nc.subscribe(bus.subjects.reply(sid), cb=on_reply)
        await bus.js.publish(bus.subjects.control(sid, "start"), codec.encode(SessionStart(session=sid, assistant=True)))
        await bus.nc.publish(bus.subjects.partial(sid), codec.encode(PartialTranscript(
            session=sid, utterance=0, revision=3, text=early, start=0.0, end=1.0, closing=True)))
        if wait:  # (spec-3: the final comes before the early reply has said anything)
            await until(lambda: sid in assistant.speculations and assistant.speculations[sid].pieces_said, 60,
                        "the early reply's first piece")
            assert not replies and not got, "an early reply went out before its final"
        else:
            await until(lambda: sid in assistant.speculations, 10, "the early reply")
        t = Transcript(session=sid, utterance=0, text=final, start=0.0, end=1.0)
        await bus.js.publish(bus.subjects.transcript(sid), codec.encode(t), headers={"Nats-Msg-Id": f"{sid}:0"})
        await until(lambda: any(c.final for _, c, _ in got) and any(r.final for r in replies), 60, "the spoken reply")
        await sub.unsubscribe()
        await rsub.unsubscribe()
        kind = "adopted" if early == final else "discarded"
        assert assistant.speculated[kind] == before[kind] + 1, assistant.speculated
        assert [r.index for r in replies] == list(range(len(replies))) and sum(r.final for r in replies) == 1
        assert [c.seq for _, c, _ in got] == list(range(len(got))) and sum(c.final for _, c, _ in got) == 1
        assert {c.turn for _, c, _ in got} == {0} and not TTS[0].sessions[sid].held_audio
        assert not TTS[0].sessions[sid].holding
        spoken = " ".join(c.text for _, c, _ in got if c.text)
        assert wer("".join(r.text for r in replies), spoken) == 0, (spoken, replies)
