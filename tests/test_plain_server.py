"""voxbus against a plain `nats-server -js` with default settings: its max_payload is 1 MiB (the
embedded server allows 8 MB). Long speech comes back in parts, long utterances travel through the
uploads Object Store, and what cannot be sent is refused up front. Real server, models and CLI."""

import asyncio
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio
import soundfile as sf
from nats.js.errors import NotFoundError

from tests.helpers import make_config, run_voxbus, running_manager, until_busy, wer, worker_pid
from voxbus.client import ModelClient
from voxbus.config import EmbeddedServerConfig
from voxbus.errors import PayloadTooLarge
from voxbus.messages import AudioFormat
from voxbus.server import NatsServer
from voxbus.stt import SttService
from voxbus.tts import TtsService

pytestmark = [pytest.mark.models, pytest.mark.asyncio(loop_scope="module")]

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
# One sentence, no comma: the TTS service speaks it as a single synthesis of about 30 s (1.3 MB).
LONG = ("the little red train went slowly up the long green hill behind the old farmhouse and the driver waved "
        "at the children who stood by the river and the river ran down past the mill where the miller sang to "
        "his goats and the goats ate the flowers that grew along the stone wall and the wall led to a small "
        "church where the bells rang every hour and the baker on the square sold warm bread to everyone who "
        "came by in the morning and in the evening the lights of the village went on one by one until the "
        "whole valley was glowing under the stars and the train came back down the hill to sleep.")
KILLED: set[int] = set()  # worker pids a test kills on purpose; any other crash fails the module
MORE = ("On the next day a storm rolled in from the sea. The fishermen pulled their boats onto the beach, "
        "the shops closed their shutters, and the whole town waited by the fire for the wind to pass.")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def plain(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("plain")
    conf = tmp / "nats.conf"
    conf.write_text("jetstream {}\n")  # nothing else: every limit at nats-server's default
    async with NatsServer(EmbeddedServerConfig(port=0, monitor_port=0, config_file=str(conf)),
                          store_dir=tmp / "js") as server:
        async with running_manager(make_config(server.url, tmp / "cache"), expect_crashes=KILLED) as (bus, manager):
            assert bus.nc.max_payload == 1 << 20
            async with SttService(bus), TtsService(bus):
                yield server, bus, ModelClient.from_bus(bus), tmp


async def test_say_of_a_long_sentence_writes_the_whole_wav(plain):
    server, bus, models, tmp = plain
    out = tmp / "long.wav"
    rc, stdout, err = await run_voxbus("say", LONG, "-o", str(out), "--nats", server.url, timeout=300)
    assert rc == 0, err
    audio, rate = sf.read(str(out), dtype="int16")
    assert len(audio) * 2 > bus.nc.max_payload and len(audio) / rate > 25  # more than one message held
    direct, meta = await models.synthesize(LONG)  # the same speech, reassembled by the model client
    assert abs(len(audio) / rate - meta.duration) < 0.1 * meta.duration, (len(audio) / rate, meta.duration)
    heard = await models.transcribe(audio.tobytes(), AudioFormat(rate=rate))
    assert wer(LONG, heard.text) <= 0.2, heard.text


async def test_a_long_utterance_goes_through_the_uploads_bucket(plain):
    server, bus, models, tmp = plain
    text = LONG + " " + MORE  # about 40 s: over 1 MiB even as 16 kHz s16
    pcm, meta = await models.synthesize(text, format=AudioFormat(rate=48000, channels=2, sample="f32le"))
    assert meta.parts > 1 and len(pcm) > 8 * bus.nc.max_payload and meta.duration * 32000 > bus.nc.max_payload
    reply = await models.transcribe(pcm, meta.format)  # still over 1 MiB as 16 kHz s16: uploaded
    assert wer(text, reply.text) <= 0.2, reply.text
    stream = await bus.js.stream_info(f"OBJ_{bus.subjects.upload_bucket()}")
    assert stream.state.last_seq > 1, "the audio went through the bucket"
    store = await bus.js.object_store(bus.subjects.upload_bucket())
    with pytest.raises(NotFoundError):  # the client removed it once the call ended: nothing is left
        await store.list(ignore_deletes=True)


async def test_an_upload_outlives_a_worker_crash_and_is_removed_after(plain):
    server, bus, models, tmp = plain
    text = LONG + " " + MORE
    pcm, meta = await models.synthesize(text, format=AudioFormat(rate=16000))
    assert len(pcm) > bus.nc.max_payload  # goes through the bucket
    await models.load("whisper-tiny-en")
    victim = await worker_pid(models, "whisper-tiny-en")
    call = asyncio.create_task(models.transcribe(pcm, meta.format))
    await until_busy(models, "whisper-tiny-en")  # the manager has read the upload and is transcribing
    KILLED.add(victim)
    os.kill(victim, signal.SIGKILL)
    reply = await asyncio.wait_for(call, 120)  # the client's one retry reads the same object again
    assert wer(text, reply.text) <= 0.2, reply.text
    assert await worker_pid(models, "whisper-tiny-en") != victim
    store = await bus.js.object_store(bus.subjects.upload_bucket())
    with pytest.raises(NotFoundError):
        await store.list(ignore_deletes=True)


async def test_transcribe_of_a_ten_minute_file_gives_all_of_it(plain):
    server, bus, models, tmp = plain
    clip, rate = sf.read(str(EXAMPLES / "welcome.flac"), dtype="float32")
    one = np.concatenate([clip, np.zeros(int(0.8 * rate), np.float32)])
    repeats = int(np.ceil(600 * rate / len(one)))
    path = tmp / "ten-minutes.flac"
    sf.write(str(path), np.tile(one, repeats)[: 600 * rate], rate)
    rc, out, err = await run_voxbus("transcribe", "--json", "--nats", server.url, str(path), timeout=600)
    assert rc == 0, err
    (doc,) = json.loads(out)
    # welcome.flac holds two sentences; the 600 s cut ends inside the last copy.
    assert 2 * (repeats - 1) <= len(doc["transcripts"]) <= 2 * repeats
    assert [t["utterance"] for t in doc["transcripts"]] == list(range(len(doc["transcripts"])))
    assert doc["transcripts"][-1]["end"] > 590


async def test_what_cannot_be_sent_is_refused_up_front(plain):
    server, bus, models, tmp = plain
    history = [{"role": "user", "content": "word " * 300_000}]  # 1.5 MB of chat: over one message
    with pytest.raises(PayloadTooLarge, match="max_payload"):
        await models.complete(messages=history, max_tokens=2)
