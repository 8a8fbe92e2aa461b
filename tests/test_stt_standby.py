"""A second STT process on the same prefix stands by while the first holds the durable consumer,
instead of recreating it under the first (the two would split sessions' frames), and takes over
when the first is SIGKILLed. Real nats-server, a real `voxbus stt` process, silence frames (no
model call is needed)."""

import asyncio
import os
import signal
import sys

from tests.helpers import make_config
from voxbus.bus import open_bus
from voxbus.messages import AudioFormat, AudioFrame, codec
from voxbus.stt import SttService

FMT = AudioFormat(rate=16000)


async def _frames(bus, sid: str, count: int) -> None:
    for seq in range(count):
        await bus.js.publish(bus.subjects.audio_in(sid), b"\0" * 640, headers=codec.meta_headers(AudioFrame(format=FMT, seq=seq)))


async def test_a_second_stt_stands_by_and_takes_over_when_the_first_is_killed(nats_server, tmp_path):
    config = make_config(nats_server.url, tmp_path / "cache")
    first = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "voxbus", "stt", "--nats", nats_server.url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert b"STT service consuming" in await asyncio.wait_for(first.stdout.readline(), 60)
        async with open_bus(config, name="standby") as bus:
            s = bus.subjects
            second = SttService(bus)
            starting = asyncio.create_task(second.start())
            await asyncio.sleep(3.0)
            assert not starting.done(), "the second STT took the consumer from the first"
            await _frames(bus, "held-by-first", 20)
            for _ in range(100):
                info = await bus.js.consumer_info(s.stream("audio"), s.consumer("stt"))
                if info.delivered.stream_seq >= 20:
                    break
                await asyncio.sleep(0.1)
            assert info.delivered.stream_seq >= 20 and info.push_bound  # the first one takes them
            assert second.stats.frames == 0
            os.kill(first.pid, signal.SIGKILL)
            await first.wait()
            await asyncio.wait_for(starting, 15)  # free at once: the server saw the connection close
            await _frames(bus, "after-takeover", 20)
            for _ in range(100):
                if second.stats.frames >= 20:
                    break
                await asyncio.sleep(0.1)
            assert second.stats.frames >= 20
            await second.stop()
    finally:
        if first.returncode is None:
            first.kill()
            await first.wait()
