"""The gateways against a real deployment (nats-server, ModelManager with the bundled models, the
STT service), driven by clients nobody here wrote: the official `openai` package against
`voxbus http`, and the `wyoming` package's TCP client against `voxbus wyoming`."""

import asyncio
import io
import json
import os
import re
import signal
import sys
import urllib.request
import wave

import openai
import pytest
import pytest_asyncio
import soundfile as sf
from wyoming.asr import Transcribe, Transcript, TranscriptChunk
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.info import Describe, Info
from wyoming.tts import Synthesize

from tests.helpers import embedded_config, make_config, running_manager, wer
from tests.speech import speak
from voxbus.client import ModelClient
from voxbus.gateways import http_app, wyoming_gateway
from voxbus.history import stored
from voxbus.messages import AudioFormat
from voxbus.server import NatsServer
from voxbus.stt import SttService

pytestmark = [pytest.mark.models, pytest.mark.asyncio(loop_scope="module")]

SENTENCES = ["The museum opens early on Sunday morning.", "Tickets are sold at the front desk."]
MAX_UPLOAD = 2 * 1024 * 1024


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gateways")
    async with NatsServer(embedded_config(), store_dir=tmp / "js") as server:
        config = make_config(server.url, tmp / "cache", http={"max_upload": MAX_UPLOAD})
        async with running_manager(config) as (bus, manager):
            async with SttService(bus):
                async with http_app.serving(bus, "127.0.0.1", 0) as url, \
                        wyoming_gateway.serving(bus, "tcp://127.0.0.1:0") as wy:
                    client = ModelClient.from_bus(bus)
                    audio, rate = await speak(client, SENTENCES)
                    wav = io.BytesIO()
                    sf.write(wav, audio, rate, format="WAV", subtype="PCM_16")
                    api = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
                    yield bus, client, api, wav.getvalue(), wy, url


async def test_openai_transcriptions_in_every_format_go_through_the_bus(stack):
    bus, client, api, wav, _, _ = stack
    said = " ".join(SENTENCES)
    got = await api.audio.transcriptions.create(model="whisper-1", file=("talk.wav", wav), response_format="json")
    assert wer(said, got.text) <= 0.15, got.text
    verbose = await api.audio.transcriptions.create(model="whisper-1", file=("talk.wav", wav),
                                                    response_format="verbose_json", timestamp_granularities=["word"])
    assert wer(said, verbose.text) <= 0.15 and verbose.language == "en" and verbose.duration > 3
    assert len(verbose.segments) >= 2 and verbose.segments[0].start < verbose.segments[-1].start
    words = verbose.words
    assert len(words) >= 10 and all(a.start <= b.start for a, b in zip(words, words[1:]))
    srt = await api.audio.transcriptions.create(model="whisper-1", file=("talk.wav", wav), response_format="srt")
    assert srt.startswith("1\n00:00:") and " --> " in srt and "\n2\n" in srt
    vtt = await api.audio.transcriptions.create(model="whisper-1", file=("talk.wav", wav), response_format="vtt")
    assert vtt.startswith("WEBVTT\n\n") and vtt.count(" --> ") >= 2
    # Each upload was a session on the bus: stored, replayable.
    raw = await api.audio.transcriptions.with_raw_response.create(model="whisper-1", file=("talk.wav", wav))
    session = raw.headers["x-voxbus-session"]
    stored_frames = [m async for m in stored(bus.js, bus.subjects.stream("audio"), bus.subjects.audio_in(session))]
    assert len(stored_frames) > 100


async def test_openai_streamed_transcription_sends_each_utterance_then_the_whole_text(stack):
    _, _, api, wav, _, _ = stack
    stream = await api.audio.transcriptions.create(model="whisper-1", file=("talk.wav", wav), stream=True)
    events = [event async for event in stream]
    deltas = [e for e in events if e.type == "transcript.text.delta"]
    done = [e for e in events if e.type == "transcript.text.done"]
    assert len(deltas) == 2 and len(done) == 1, events
    assert "".join(d.delta for d in deltas) == done[0].text


async def test_openai_speech_comes_back_as_audio_that_transcribes_to_its_text(stack):
    _, client, api, _, _, _ = stack
    text = "The library closes early on Sundays."
    speech = await api.audio.speech.create(model="tts-1", voice="alloy", input=text, response_format="wav")
    data = speech.content
    with wave.open(io.BytesIO(data)) as w:  # (a streamed WAV: its header says "unknown length")
        rate, width = w.getframerate(), w.getsampwidth()
    pcm = data[44:]
    assert width == 2 and len(pcm) > rate
    heard = await client.transcribe(pcm, AudioFormat(rate=rate))
    assert wer(text, heard.text) <= 0.2, heard.text
    flac = await api.audio.speech.create(model="tts-1", voice="piper-joe", input=text, response_format="flac")
    samples, flac_rate = sf.read(io.BytesIO(flac.content))
    assert flac_rate == rate and len(samples) > rate
    for kind in ("mp3", "opus"):  # libsndfile writes them; they decode back to about the same length
        coded = await api.audio.speech.create(model="tts-1", voice="alloy", input=text, response_format=kind)
        back, back_rate = sf.read(io.BytesIO(coded.content))
        assert abs(len(back) / back_rate - len(samples) / flac_rate) < 0.3, kind
    pcm24 = await api.audio.speech.create(model="tts-1", voice="alloy", input="Hello.", response_format="pcm")
    assert len(pcm24.content) % 2 == 0 and len(pcm24.content) > 24000 * 2 * 0.2  # OpenAI's pcm: 24 kHz s16


async def test_openai_chat_streamed_and_not_and_models(stack):
    _, _, api, _, _, _ = stack
    messages = [{"role": "user", "content": "Say hello."}]
    whole = await api.chat.completions.create(model="gpt-4o-mini", messages=messages, max_tokens=12, temperature=0,
                                              user="gw-1")
    assert whole.choices[0].message.role == "assistant" and whole.choices[0].message.content
    assert whole.usage.completion_tokens >= 1 and whole.model == "gemma3-270m"
    stream = await api.chat.completions.create(model="gemma3-270m", messages=messages, max_tokens=12, temperature=0,
                                               stream=True)
    chunks = [c async for c in stream]
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[-1].choices[0].finish_reason in ("stop", "length")
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert streamed.split()[:2] == whole.choices[0].message.content.split()[:2]  # greedy: the same start
    completion = await api.completions.create(model="gemma3-270m", prompt="Once upon a time", max_tokens=8)
    assert completion.choices[0].text
    models = [m.id async for m in api.models.list()]
    assert {"whisper-tiny-en", "gemma3-270m", "piper-joe"} <= set(models)


async def test_bad_uploads_get_openai_errors_and_the_gateway_goes_on(stack):
    _, _, api, wav, _, url = stack
    with pytest.raises(openai.BadRequestError) as e:
        await api.audio.transcriptions.create(model="whisper-1", file=("notes.txt", b"these are not audio samples"))
    assert e.value.status_code == 400 and e.value.body["code"] == "invalid_audio" and "cannot decode" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        await api.audio.transcriptions.create(model="whisper-1", file=("empty.wav", b""))
    assert e.value.body["code"] == "empty_file"
    with pytest.raises(openai.APIStatusError) as e:
        await api.audio.transcriptions.create(model="whisper-1", file=("big.wav", b"\0" * (MAX_UPLOAD + 1)))
    assert e.value.status_code == 413 and e.value.body["code"] == "payload_too_large"
    with pytest.raises(openai.NotFoundError) as e:
        await api.audio.transcriptions.create(model="no-such-model", file=("talk.wav", wav))
    assert e.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        await api.audio.speech.create(model="tts-1", voice="alloy", input="", response_format="wav")
    got = await api.audio.transcriptions.create(model="whisper-1", file=("talk.wav", wav))  # still serving
    assert wer(" ".join(SENTENCES), got.text) <= 0.15


async def test_an_api_key_is_asked_for_when_one_is_set(stack):
    bus, *_ = stack
    async with http_app.serving(bus, "127.0.0.1", 0, api_key="s3cret") as url:
        without = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            await without.models.list()
        ok = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="s3cret", max_retries=0)
        assert [m async for m in ok.models.list()]


async def test_wyoming_describe_transcribe_and_synthesize(stack):
    _, client, _, wav, wy, _ = stack
    host, port = wy.removeprefix("tcp://").rsplit(":", 1)
    async with AsyncTcpClient(host, int(port)) as wc:
        await wc.write_event(Describe().event())
        info = Info.from_event(await wc.read_event())
        assert info.asr[0].models[0].name == "whisper-tiny-en" and info.asr[0].supports_transcript_streaming
        assert any(v.name == "piper-joe" for v in info.tts[0].voices)

        with wave.open(io.BytesIO(wav)) as w:
            rate, pcm = w.getframerate(), w.readframes(w.getnframes())
        await wc.write_event(Transcribe(language="en").event())
        await wc.write_event(AudioStart(rate=rate, width=2, channels=1).event())
        step = 2048
        for i in range(0, len(pcm), step):
            await wc.write_event(AudioChunk(rate=rate, width=2, channels=1, audio=pcm[i:i + step]).event())
        await wc.write_event(AudioStop().event())
        chunks, final = [], None
        while final is None:
            event = await asyncio.wait_for(wc.read_event(), 60)
            if TranscriptChunk.is_type(event.type):
                chunks.append(TranscriptChunk.from_event(event).text)
            elif Transcript.is_type(event.type):
                final = Transcript.from_event(event).text
        assert wer(" ".join(SENTENCES), final) <= 0.15 and "".join(chunks).strip() == final

        await wc.write_event(Synthesize(text="Good morning, how did you sleep?").event())
        start = AudioStart.from_event(await wc.read_event())
        audio = b""
        while True:
            event = await asyncio.wait_for(wc.read_event(), 60)
            if AudioStop.is_type(event.type):
                break
            audio += AudioChunk.from_event(event).audio
    heard = await client.transcribe(audio, AudioFormat(rate=start.rate, channels=start.channels))
    assert wer("Good morning, how did you sleep?", heard.text) <= 0.25, heard.text


async def test_voxbus_up_serves_both_gateways_behind_its_flags(tmp_path):
    """`voxbus up --http --wyoming`, as a user runs it (a child process, its own server): both
    gateways answer, /health sees the manager, STT and TTS, and Ctrl-C drains it all."""
    async with NatsServer(embedded_config(), store_dir=tmp_path / "js") as server:
        env = {**os.environ, "VOXBUS__HTTP__PORT": "0", "VOXBUS__WYOMING__URI": "tcp://127.0.0.1:0",
               "VOXBUS__MANAGER__CACHE_DIR": str(tmp_path / "cache")}
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "voxbus", "up", "--http", "--wyoming",
                                                    "--nats", server.url, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE, env=env)
        try:
            banner = (await asyncio.wait_for(proc.stdout.readline(), 120)).decode()
            http_url = re.search(r"OpenAI API at (http://\S+)/v1", banner).group(1)
            host, port = re.search(r"Wyoming at tcp://(\S+):(\d+)", banner).groups()
            with await asyncio.to_thread(urllib.request.urlopen, f"{http_url}/health", timeout=30) as reply:
                health = json.loads(reply.read())
            assert health["status"] == "ok" and health["manager"] and health["stt"] and health["tts"], health
            async with AsyncTcpClient(host, int(port)) as wc:
                await wc.write_event(Describe().event())
                assert Info.from_event(await asyncio.wait_for(wc.read_event(), 30)).asr
        finally:
            proc.send_signal(signal.SIGINT)
            rc = await asyncio.wait_for(proc.wait(), 60)
        assert rc == 0, (await proc.stderr.read()).decode()[-2000:]
