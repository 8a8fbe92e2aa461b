"""nats-server restarted (SIGTERM, then started again on the same port and store) while live
sessions are being published: every frame is stored once, in the end, and every session is
transcribed, with nothing reported missing."""

import asyncio
import sys

import pytest

from tests.helpers import assert_sessions_complete, embedded_config, make_config, running_manager, until_sessions_stream
from tests.speech import speak, write_variant
from voxbus.client import ModelClient
from voxbus.config import EmbeddedServerConfig
from voxbus.server import NatsServer
from voxbus.stt import SttService

pytestmark = pytest.mark.models

SENTENCES = ["Good morning and welcome to the meeting.", "First we look at the budget for next year.",
             "Then we talk about the new office."]
SESSIONS = [f"live-{i}" for i in range(4)]


async def test_a_broker_restart_during_four_live_publishes_loses_nothing(tmp_path):
    first = await NatsServer(embedded_config(), store_dir=tmp_path / "js").start()
    again = NatsServer(EmbeddedServerConfig(port=first.port, monitor_port=first.monitor_port), store_dir=tmp_path / "js")
    config = make_config(first.url, tmp_path / "cache")
    try:
        async with running_manager(config) as (bus, manager):
            audio, rate = await speak(ModelClient.from_bus(bus), SENTENCES)
            path = write_variant(audio, rate, tmp_path / "talk.wav")
            async with SttService(bus) as stt:
                publishers = [await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "voxbus", "publish", str(path), "--session", sid, "--realtime",
                    "--nats", first.url, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
                    for sid in SESSIONS]
                await until_sessions_stream(bus, SESSIONS)  # (a slow machine takes seconds to start them)
                await asyncio.sleep(1.0)  # a second into every session
                await first.stop()  # SIGTERM: what was on its way to it is lost
                await asyncio.sleep(0.5)
                await again.start()
                results = [await asyncio.wait_for(p.communicate(), 120) for p in publishers]
                for p, (out, err) in zip(publishers, results):
                    assert p.returncode == 0, err.decode()
                for _ in range(600):
                    if stt.stats.sessions_done >= len(SESSIONS):
                        break
                    await asyncio.sleep(0.1)
            await assert_sessions_complete(bus, SESSIONS, " ".join(SENTENCES))
    finally:
        await again.stop()
        await first.stop()

