"""Killing the STT service (SIGKILL) mid-session loses nothing and duplicates nothing."""

import asyncio
import os
import signal
import sys

import pytest

from tests.helpers import make_config, running_manager, until, wer, worker_pid
from tests.speech import speak
from voxbus.audio import encode_pcm
from voxbus.client import ModelClient
from voxbus.history import stored
from voxbus.ingest import SessionPublisher
from voxbus.messages import AudioFormat, AudioFrame, SessionTranscribed, Transcript, codec

pytestmark = pytest.mark.models

SENTENCES = ["Good morning and welcome to the meeting.", "First we look at the budget for next year.",
             "Then we talk about the new office.", "After lunch the team presents the plan.",
             "Questions are welcome at any time.", "Thank you all for coming today."]


async def start_stt(url: str) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "voxbus", "stt", "--nats", url,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    assert b"STT service consuming" in line, line
    return proc


async def test_sigkill_mid_session_then_restart_gives_every_transcript_exactly_once(nats_server, tmp_path):
    config = make_config(nats_server.url, tmp_path / "cache")
    async with running_manager(config) as (bus, manager):
        client = ModelClient.from_bus(bus)
        audio, rate = await speak(client, SENTENCES)
        fmt = AudioFormat(rate=rate)
        pcm = encode_pcm(audio, fmt)
        arrived: list[Transcript] = []
        done: dict[str, SessionTranscribed] = {}

        async def on_transcript(msg):
            arrived.append(codec.decode(msg.data, Transcript))

        async def on_done(msg):
            event = codec.decode(msg.data, SessionTranscribed)
            done[event.session] = event

        await bus.nc.subscribe(bus.subjects.all_transcripts(), cb=on_transcript)
        await bus.nc.subscribe(bus.subjects.all_control("transcribed"), cb=on_done)

        stt = await start_stt(nats_server.url)
        try:
            await SessionPublisher(bus, "crash-a").publish_pcm(pcm, fmt)
            while len(arrived) < 2:  # some utterances stored, others held or waiting
                await asyncio.sleep(0.02)
            os.kill(stt.pid, signal.SIGKILL)
            await stt.wait()
            killed_after = len(arrived)
            assert "crash-a" not in done and killed_after < len(SENTENCES)
            # A session published entirely while no STT service runs is picked up too.
            await SessionPublisher(bus, "crash-b").publish_pcm(pcm, fmt)
            stt = await start_stt(nats_server.url)
            for _ in range(1200):
                if {"crash-a", "crash-b"} <= done.keys():
                    break
                await asyncio.sleep(0.1)
        finally:
            if stt.returncode is None:
                stt.terminate()
                await stt.wait()

        for sid in ("crash-a", "crash-b"):
            assert done[sid].utterances == len(SENTENCES), (sid, done[sid])
            kept = [codec.decode(m.data, Transcript)
                    async for m in stored(bus.js, bus.subjects.stream("text"), bus.subjects.transcript(sid))]
            assert [t.utterance for t in kept] == list(range(len(SENTENCES))), [(t.utterance, t.text) for t in kept]
            for sentence, t in zip(SENTENCES, kept):  # each utterance is its own sentence, none lost or doubled
                # (0.3: Whisper tiny may mishear two of a short sentence's words, "after launch the
                # team presence the plan", depending on what shares its batch)
                assert wer(sentence, t.text) <= 0.3, (sid, sentence, t.text)
            assert wer(" ".join(SENTENCES), " ".join(t.text for t in kept)) <= 0.15, (sid, [t.text for t in kept])
            assert all(a.last_seq < b.first_seq for a, b in zip(kept, kept[1:]))  # no audio transcribed twice


async def test_an_utterance_whose_deadline_passes_while_the_manager_works_is_asked_again(nats_server, tmp_path,
                                                                                         caplog):
    """A model call that times out after the manager accepted it is final for that call, not for
    the utterance. The Whisper worker is stopped (SIGSTOP) so the STT service's first request,
    with a 1 s deadline, times out while the manager waits on it; once the worker goes on
    (SIGCONT) the service's next try stores the transcript, and no error reaches the session."""
    from voxbus.stt import SttService

    config = make_config(nats_server.url, tmp_path / "cache", client={"deadline": "1s"})
    async with running_manager(config) as (bus, manager):
        models = ModelClient(bus.nc, bus.subjects)  # default deadline, for the test's own calls
        audio, rate = await speak(models, SENTENCES[:1])
        fmt = AudioFormat(rate=rate)
        await models.load("whisper-tiny-en")
        worker = await worker_pid(models, "whisper-tiny-en")
        caplog.set_level("WARNING", logger="voxbus.stt.transcripts")
        async with SttService(bus) as stt:
            os.kill(worker, signal.SIGSTOP)
            try:
                await SessionPublisher(bus, "slow-start").publish_pcm(encode_pcm(audio, fmt), fmt)
                await until(lambda: any("deadline passed" in r.getMessage() for r in caplog.records), 30,
                            "the first transcription to time out")
            finally:
                os.kill(worker, signal.SIGCONT)
            await until(lambda: stt.stats.sessions_done == 1, 60, "the session to be transcribed")
        texts = [codec.decode(m.data, Transcript) async for m in
                 stored(bus.js, bus.subjects.stream("text"), bus.subjects.transcript("slow-start"))]
        errors = [m async for m in stored(bus.js, bus.subjects.stream("ctl"), bus.subjects.control("slow-start", "error"))]
    assert not errors, [m.data for m in errors]
    assert len(texts) == 1 and wer(SENTENCES[0], texts[0].text) <= 0.2, texts


async def test_a_deleted_consumer_is_created_again_where_it_was(nats_server, tmp_path):
    """Someone deletes the STT's durable consumer, once while the service runs and once while it
    is down: each time it is bound again at the floor it had recorded, not at NEW, and the
    sessions sent meanwhile are transcribed."""
    from voxbus.stt import SttService

    config = make_config(nats_server.url, tmp_path / "cache", stt={"ack_wait": "3s"})  # checks every second
    async with running_manager(config) as (bus, manager):
        audio, rate = await speak(ModelClient.from_bus(bus), SENTENCES[:1])
        fmt = AudioFormat(rate=rate)
        pcm = encode_pcm(audio, fmt)
        durable, stream = bus.subjects.consumer("stt"), bus.subjects.stream("audio")

        async def texts(sid):
            return [codec.decode(m.data, Transcript)
                    async for m in stored(bus.js, bus.subjects.stream("text"), bus.subjects.transcript(sid))]
        async with SttService(bus) as stt:
            await SessionPublisher(bus, "before").publish_pcm(pcm, fmt)
            await until(lambda: stt.stats.sessions_done == 1, 60, "the first session")
            await bus.js.delete_consumer(stream, durable)
            await SessionPublisher(bus, "while-running").publish_pcm(pcm, fmt)
            await until(lambda: stt.stats.sessions_done == 2, 60, "the session sent after the consumer was deleted")
            assert stt._subs[0].rebound == 1
        await bus.js.delete_consumer(stream, durable)  # and again, with the service down
        await SessionPublisher(bus, "while-down").publish_pcm(pcm, fmt)
        async with SttService(bus) as stt:
            await until(lambda: stt.stats.sessions_done >= 1, 60, "the session sent while the service was down")
        for sid in ("before", "while-running", "while-down"):
            found = await texts(sid)
            assert len(found) == 1 and wer(SENTENCES[0], found[0].text) <= 0.2, (sid, found)
            replayed = [m async for m in stored(bus.js, bus.subjects.stream("ctl"), bus.subjects.control(sid, "error"))]
            assert not replayed, (sid, replayed)  # frames delivered again by the new consumer are no duplicates


async def test_audio_the_stream_dropped_before_it_was_read_is_reported_and_counted(nats_server, tmp_path):
    """With the STT service down, a session larger than AUDIO's max_bytes loses its first frames
    to the stream's limits. The restarted service warns on the admin subject that the stream is
    full of audio it has not taken, reports the lost frames missing, transcribes the rest, and
    its `transcribed` event counts them: the session is never reported as fully transcribed."""
    from voxbus.messages import SessionError
    from voxbus.stt import SttService

    from voxbus.messages import RetentionWarning

    config = make_config(nats_server.url, tmp_path / "cache", streams={"audio": {"max_bytes": "160KiB"}},
                         stt={"ack_wait": "3s"})  # (checks its consumers every second)
    async with running_manager(config) as (bus, manager):
        audio, rate = await speak(ModelClient.from_bus(bus), SENTENCES[:3])
        fmt = AudioFormat(rate=rate)
        async with SttService(bus):
            pass  # its consumer exists: the next run resumes where this one was
        await SessionPublisher(bus, "squeezed").publish_pcm(encode_pcm(audio, fmt), fmt)
        s = bus.subjects
        kept = [m async for m in stored(bus.js, s.stream("audio"), s.audio_in("squeezed"))]
        first = codec.decode_meta(kept[0].headers, AudioFrame).seq
        assert first > 0, "the stream kept every frame: make the session longer than max_bytes"
        warnings = []

        async def on_warning(msg):
            warnings.append(codec.decode(msg.data, RetentionWarning))
        await bus.nc.subscribe(s.admin("retention"), cb=on_warning)
        async with SttService(bus) as stt:
            await until(lambda: stt.stats.sessions_done == 1, 60, "the session to finish")
            await until(lambda: warnings and warnings[-1].level == "ok", 10, "the all-clear")
        assert warnings[0].level == "warning" and warnings[0].stream == "VOX_AUDIO", warnings
        assert warnings[0].unacknowledged == len(kept) and warnings[0].headroom < warnings[0].capacity * 0.2
        (done,) = [codec.decode(m.data, SessionTranscribed)
                   async for m in stored(bus.js, s.stream("ctl"), s.control("squeezed", "transcribed"))]
        errors = [codec.decode(m.data, SessionError)
                  async for m in stored(bus.js, s.stream("ctl"), s.control("squeezed", "error"))]
        texts = [codec.decode(m.data, Transcript) async for m in stored(bus.js, s.stream("text"), s.transcript("squeezed"))]
    assert [(e.code, e.seq) for e in errors] == [("frames_missing", 0)], errors
    assert f"frames 0-{first - 1} were never read" in errors[0].message
    assert done.frames_missing == first and done.last_seq == first + len(kept) - 1
    assert texts and SENTENCES[2].split()[-1].strip(".") in texts[-1].text, [t.text for t in texts]
