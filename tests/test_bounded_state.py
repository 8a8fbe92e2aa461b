"""A long-running deployment keeps bounded state: after 1,000 short sessions through the services
`voxbus up` runs (STT, TTS, assistant, with the manager, in one process), their per-session state,
tasks and memory return to the idle level. Real server, manager and models."""

import asyncio
import gc
import time

import psutil
import pytest

from tests.helpers import make_config, running_manager
from voxbus.assistant import Assistant
from voxbus.client import ModelClient
from voxbus.messages import AudioFormat, AudioFrame, SayRequest, SessionEnd, SessionStart, SpeechChunk, Transcript, codec
from voxbus.stt import SttService
from voxbus.tts import TtsService

pytestmark = pytest.mark.models

SESSIONS = 1000


async def until(predicate, timeout: float, what: str):
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def test_a_thousand_short_sessions_leave_no_state_behind(nats_server, tmp_path):
    config = make_config(nats_server.url, tmp_path / "cache", tts={"session_idle": "1s"},
                         assistant={"session_idle": "1s", "max_tokens": 4, "temperature": 0.0})
    async with running_manager(config) as (bus, manager):
        async with SttService(bus) as stt, TtsService(bus) as tts, Assistant(bus) as assistant:
            s = bus.subjects
            ends: set[str] = set()

            async def on_audio(msg):
                if codec.decode_meta(msg.headers, SpeechChunk).final:
                    ends.add(s.session_from(msg.subject))

            await bus.nc.subscribe(s.all_audio_out(), cb=on_audio)
            asked = [f"ask-{i}" for i in range(3)]
            for sid in asked:
                await bus.js.publish(s.control(sid, "start"), codec.encode(SessionStart(session=sid, assistant=True)))
            models = ModelClient.from_bus(bus)
            for model in ("whisper-tiny-en", "piper-joe", "gemma3-270m"):  # their workers are not session state
                await models.load(model)
            await asyncio.sleep(1.0)
            gc.collect()
            idle_tasks, idle_rss = len(asyncio.all_tasks()), psutil.Process().memory_info().rss
            before = set(asyncio.all_tasks())

            fmt = AudioFormat(rate=16000)
            for i in range(SESSIONS):
                sid = f"short-{i}"
                head = AudioFrame(format=fmt, seq=0, ts=time.time())
                await bus.js.publish(s.audio_in(sid), bytes(3200), headers=codec.meta_headers(head))  # 100 ms
                await bus.js.publish(s.control(sid, "end"), codec.encode(SessionEnd(session=sid, last_seq=0)))
                await bus.js.publish(s.say(sid), codec.encode(SayRequest(text="", final=True)))
                await bus.js.publish(s.transcript(sid), codec.encode(  # a session that did not ask for answers
                    Transcript(session=sid, utterance=0, text="Hello there.", start=0.0, end=0.1)))
            for sid in asked:
                await bus.js.publish(s.transcript(sid), codec.encode(
                    Transcript(session=sid, utterance=0, text="Say hi.", start=0.0, end=0.5)))

            await until(lambda: stt.stats.sessions_done >= SESSIONS, 300, "every session transcribed")
            await until(lambda: len(ends) >= SESSIONS + len(asked), 300, "every turn's end marker")
            await until(lambda: not tts.sessions and not assistant.conversations and not stt.sessions, 30,
                        "per-session state to be forgotten")
            assert not assistant.times and len(assistant.silent) == SESSIONS  # bounded (SILENT_SESSIONS)
            await asyncio.sleep(0.5)
            gc.collect()
            tasks, rss = len(asyncio.all_tasks()), psutil.Process().memory_info().rss
            new = [t for t in asyncio.all_tasks() if t not in before]
            assert tasks <= idle_tasks + 2, (idle_tasks, tasks, [(t.get_name(), t.get_coro()) for t in new])
            assert rss - idle_rss < 64 << 20, f"grew {(rss - idle_rss) >> 20} MiB over {SESSIONS} sessions"
