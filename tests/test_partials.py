"""Interim transcripts: real-time sessions of real speech through the STT service, the real
manager and the bundled models on a real server; and the pure rules behind them."""

import asyncio
import json
import os
import pty
import sys

import numpy as np
import pytest
import pytest_asyncio

from tests.helpers import embedded_config, make_config, run_voxbus, running_manager
from tests.speech import speak
from voxbus.audio import encode_pcm
from voxbus.client import ModelClient
from voxbus.ingest import SessionPublisher
from voxbus.messages import AudioFormat, PartialTranscript, Transcript, codec
from voxbus.server import NatsServer
from voxbus.stt import SttService
from voxbus.stt.agreement import LocalAgreement, reads_complete
from voxbus.stt.cutter import CutterSettings, UtteranceCutter

SENTENCE = "My grandmother keeps a small garden behind her house, where she grows tomatoes, beans and sweet peppers."


# -- the pure rules ------------------------------------------------------------------------------
def test_local_agreement_commits_what_two_hypotheses_in_a_row_agree_on():
    a = LocalAgreement()
    assert a.update("My grand") == ("My grand", "")
    assert a.update("My grandmother keeps") == ("My grandmother keeps", "My")
    assert a.update("my grandmother keeps a small") == ("My grandmother keeps a small", "My grandmother keeps")
    # A hypothesis that changes a committed word keeps the committed one; the rest follows it.
    assert a.update("By grand mother keeps a small garden") == ("My grandmother keeps a small garden",
                                                                 "My grandmother keeps")
    text, stable = a.update("My grandmother keeps a small garden behind")
    assert stable == "My grandmother keeps a small garden" and text == "My grandmother keeps a small garden behind"
    assert a.update("My grandmother keeps a small garden behind her")[1] == "My grandmother keeps a small garden behind"
    assert a.update("Totally different")[0] == "My grandmother keeps a small garden behind"  # (nothing after)


def test_reads_complete_wants_a_sentence_end_and_not_a_dangling_word():
    assert reads_complete("What is the capital of France?")
    assert reads_complete("Turn on the lights!")
    assert not reads_complete("Turn on the lights.")  # Whisper writes a period at any pause
    assert not reads_complete("What is the capital of?")
    assert not reads_complete("I went to the...")
    assert not reads_complete("What is the capital")
    assert not reads_complete("")


def test_a_finished_sentence_ends_on_the_shorter_pause_and_speech_after_the_hint_voids_it():
    """Cutter with a complete_silence of 4 windows and min_silence of 10 (pure logic)."""
    w = 512
    s = CutterSettings(min_silence_s=w * 10 / 16000, min_speech_s=w * 4 / 16000, pre_roll_s=0, post_roll_s=w * 2 / 16000,
                       complete_silence_s=w * 4 / 16000)
    c = UtteranceCutter(s)
    assert c.push(np.array([0.9] * 8 + [0.0] * 2), 0) == []
    cut = c.would_end()
    assert cut is not None and (cut.start, cut.end) == (0, 10 * w)
    c.hint_complete(cut)
    assert c.push(np.array([0.0] * 2), 10 * w) == [cut]  # 4 windows of silence: closed at the hinted end
    c = UtteranceCutter(s)
    c.push(np.array([0.9] * 8 + [0.0] * 2), 0)
    c.hint_complete(c.would_end())
    assert c.push(np.array([0.9] * 2 + [0.0] * 6), 10 * w) == []  # more speech: min_silence again
    assert c.push(np.array([0.0] * 4), 18 * w) != []


# -- real sessions -------------------------------------------------------------------------------
@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("partials")
    async with NatsServer(embedded_config(), store_dir=tmp / "js") as server:
        config = make_config(server.url, tmp / "cache")
        async with running_manager(config) as (bus, manager):
            async with SttService(bus) as stt:
                client = ModelClient.from_bus(bus)
                audio, rate = await speak(client, [SENTENCE])
                yield bus, stt, encode_pcm(audio, AudioFormat(rate=rate)), AudioFormat(rate=rate), server


async def live_session(bus, sid: str, pcm: bytes, fmt: AudioFormat, partials: bool | None):
    """Publish the speech in real time, then its end; collect its partials and its finals in
    arrival order, until it is transcribed."""
    got: list = []
    done = asyncio.Event()

    async def finished(msg) -> None:
        done.set()

    async def on(msg) -> None:
        got.append(codec.decode(msg.data, PartialTranscript if msg.subject.endswith(".partial") else Transcript))

    subs = [await bus.nc.subscribe(bus.subjects.partial(sid), cb=on),
            await bus.nc.subscribe(bus.subjects.transcript(sid), cb=on),
            await bus.nc.subscribe(bus.subjects.control(sid, "transcribed"), cb=finished)]
    try:
        pub = SessionPublisher(bus, sid, realtime=True, partials=partials)
        await pub.publish_pcm(pcm, fmt)
        await asyncio.wait_for(done.wait(), 60)
        await asyncio.sleep(0.3)  # anything (wrongly) published after the finals would arrive by now
    finally:
        for sub in subs:
            await sub.unsubscribe()
    return got


@pytest.mark.models
@pytest.mark.asyncio(loop_scope="module")
async def test_partials_come_while_speaking_grow_stably_and_the_final_is_what_partials_off_gives(stack):
    bus, stt, pcm, fmt, _ = stack
    on = await live_session(bus, "live-on", pcm, fmt, partials=True)
    finals = [m for m in on if isinstance(m, Transcript)]
    assert finals and [f.utterance for f in finals] == list(range(len(finals))), on
    for final in finals:
        at = on.index(final)
        partials = [m for m in on if isinstance(m, PartialTranscript) and m.utterance == final.utterance]
        assert all(on.index(p) < at for p in partials), f"a partial of #{final.utterance} came after its final"
        assert all(p.start == final.start for p in partials)
        assert [p.revision for p in partials] == list(range(len(partials)))
        for a, b in zip(partials, partials[1:]):
            assert b.stable.startswith(a.stable), (a.stable, b.stable)
            assert b.end >= a.end
        assert all(p.text.startswith(p.stable) for p in partials)
    first = [m for m in on if isinstance(m, PartialTranscript) and m.utterance == 0]
    assert len(first) >= 3, on
    assert first[-1].stable, "no word ever became stable"
    assert first[0].end - first[0].start <= 1.5  # the first one covers about the first second of speech

    off = await live_session(bus, "live-off", pcm, fmt, partials=False)
    assert all(isinstance(m, Transcript) for m in off), off
    assert [t.text for t in off] == [t.text for t in finals]


@pytest.mark.models
@pytest.mark.asyncio(loop_scope="module")
async def test_listen_updates_interim_text_in_place_on_a_terminal_and_json_prints_every_event(stack):
    """`voxbus listen` on a real pseudo-terminal rewrites one line with each partial, then prints
    the final; `--json` (piped) prints partials, transcripts and the transcribed event."""
    bus, stt, pcm, fmt, server = stack
    main, child = pty.openpty()
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "voxbus", "listen", "tty-1", "--nats", server.url,
                                                stdout=child, stderr=asyncio.subprocess.PIPE)
    os.close(child)
    json_proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "voxbus", "listen", "tty-1", "--json",
                                                     "--nats", server.url, stdout=asyncio.subprocess.PIPE,
                                                     stderr=asyncio.subprocess.PIPE)
    await asyncio.sleep(3)  # both subscribed (a listener sees what comes after it starts)
    await SessionPublisher(bus, "tty-1", realtime=True).publish_pcm(pcm, fmt)
    await asyncio.wait_for(proc.wait(), 60)
    screen = b""
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # (the child side is closed and everything was read)
            break
        if not chunk:
            break
        screen += chunk
    os.close(main)
    text = screen.decode()
    assert proc.returncode == 0, (await proc.stderr.read()).decode()
    rewrites = text.count("\r\x1b[2K")
    assert rewrites >= 3, text  # interim text rewritten in place, then cleared for the final
    final_line = text.split("\r\x1b[2K")[-1]
    assert final_line.startswith("#0 [") and "garden" in final_line and final_line.endswith("\r\n"), final_line
    out, err = await asyncio.wait_for(json_proc.communicate(), 60)
    events = [json.loads(line) for line in out.decode().splitlines()]
    kinds = [e["event"] for e in events]
    assert json_proc.returncode == 0 and kinds.count("partial") >= 3 and "transcript" in kinds, (kinds, err)
    assert "transcribed" in kinds
    first_final = kinds.index("transcript")
    assert all(e["utterance"] != 0 for e in events[first_final:] if e["event"] == "partial")


@pytest.mark.asyncio(loop_scope="module")
async def test_publish_mic_says_clearly_when_there_is_no_microphone(stack):
    """This machine (and CI's) has no audio input, or no PortAudio: the real sounddevice path says
    which, exits 1, and prints no traceback."""
    *_, server = stack
    rc, out, err = await run_voxbus("publish", "--mic", "--session", "mic-1", "--duration", "1", "--nats", server.url)
    if rc == 0:
        pytest.skip("this machine has a working microphone: the no-microphone path cannot be shown here")
    assert rc == 1 and "Traceback" not in err, err
    assert "voxbus: error: no microphone" in err and ("PortAudio" in err or "input device" in err), err
