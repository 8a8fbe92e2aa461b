"""Every voxbus service process is a discoverable micro service whose `status` endpoint says how
it is doing: real nats-server, real services (no model is asked: the STT only hears silence)."""

import json

import numpy as np

from tests.helpers import make_config, until
from tests.test_stt import frames_20ms, send_frame
from voxbus.assistant import Assistant
from voxbus.bus import open_bus
from voxbus.messages import ServiceStatus, codec
from voxbus.stt import SttService
from voxbus.tts import TtsService


async def test_stt_tts_and_assistant_answer_discovery_and_status(nats_server, tmp_path):
    async with open_bus(make_config(nats_server.url, tmp_path / "cache")) as bus:
        s = bus.subjects
        async with SttService(bus) as stt, TtsService(bus), Assistant(bus):
            inbox = bus.nc.new_inbox()
            pings = []

            async def on_ping(msg):
                pings.append(json.loads(msg.data))
            sub = await bus.nc.subscribe(inbox, cb=on_ping)
            await bus.nc.publish(s.micro("PING"), b"", reply=inbox)
            await until(lambda: {"vox-stt", "vox-tts", "vox-assistant"} <= {p["name"] for p in pings}, 5,
                        "every service to answer $SRV.PING")
            await sub.unsubscribe()

            async def status() -> ServiceStatus:
                return codec.decode((await bus.nc.request(s.status("stt"), b"", timeout=2)).data, ServiceStatus)
            before = await status()
            assert (before.service, before.healthy, before.sessions, before.lag_ms) == ("stt", True, 0, None)
            fmt, frames = frames_20ms(np.zeros(16000, np.float32), 16000)
            for seq, frame in enumerate(frames):
                await send_frame(bus, "quiet", fmt, seq, frame)
            await until(lambda: stt.stats.frames == len(frames), 10, "the frames to be taken")
            now = await status()
            assert now.sessions == 1 and now.counters["frames"] == len(frames) and now.lag_ms is not None, now
            stats = json.loads((await bus.nc.request(s.micro("STATS", "vox-stt"), b"", timeout=2)).data)
            (endpoint,) = stats["endpoints"]
            assert endpoint["name"] == "status" and endpoint["data"]["healthy"] is True
            assert endpoint["data"]["instance"] == stats["id"] and endpoint["num_requests"] >= 2
