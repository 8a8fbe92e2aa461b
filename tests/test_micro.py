"""$SRV.STATS counts what really happened: every request, every error reply, and processing time
from arrival to answer, even though requests are served concurrently. Real server and manager."""

import asyncio
import time

import msgspec
import pytest

from tests.helpers import make_config, running_manager, until
from voxbus.client import ModelClient
from voxbus.errors import BadRequest, UnknownModel
from voxbus.subjects import Subjects

pytestmark = pytest.mark.models


async def endpoint_stats(bus) -> dict[str, dict]:
    reply = await bus.nc.request(Subjects.micro("STATS", bus.subjects.service_name()), b"", timeout=5)
    stats = msgspec.json.decode(reply.data)
    assert stats["type"] == "io.nats.micro.v1.stats_response" and stats["started"].endswith("Z")
    return {e["name"]: e for e in stats["endpoints"]}


async def test_stats_reflect_end_to_end_handling(nats_server, tmp_path):
    config = make_config(nats_server.url, tmp_path / "cache")
    async with running_manager(config) as (bus, manager):
        models = ModelClient.from_bus(bus)
        await models.load("gemma3-270m")
        before = (await endpoint_stats(bus))["llm-generate"]
        assert before["num_requests"] == 0

        started = time.monotonic()
        done = await asyncio.gather(*(models.complete(f"Count to {n}:", max_tokens=24, temperature=0.0)
                                      for n in range(3)))
        wall = time.monotonic() - started
        for call, error in ((models.complete(max_tokens=2), BadRequest),
                            (models.complete("x", model="no-such-model"), UnknownModel)):
            with pytest.raises(error):
                await call
        stats = (await endpoint_stats(bus))["llm-generate"]
        assert stats["num_requests"] == 5 and stats["num_errors"] == 2
        assert "unknown_model" in stats["last_error"]
        # Served one after another on one worker, concurrently admitted: their handling times add
        # up to at least the sum of their own total times, and each is far more than a spawn.
        served = sum(d.timings.total_ms for d in done) / 1000
        assert stats["processing_time"] / 1e9 >= served * 0.9 and served > wall * 0.9
        assert stats["average_processing_time"] == stats["processing_time"] // 5
        assert stats["average_processing_time"] / 1e9 > 0.05

        # A request in progress is already counted; its time joins when it ends.
        running = asyncio.create_task(models.complete("A long one:", max_tokens=64, temperature=0.0))
        await until(lambda: manager.pool.slots["gemma3-270m"].workers[0].state == "busy", what="the request to run")
        mid = (await endpoint_stats(bus))["llm-generate"]
        assert mid["num_requests"] == 6 and mid["data"]["in_flight"] == 1
        assert mid["processing_time"] == stats["processing_time"]
        await running
        after = (await endpoint_stats(bus))["llm-generate"]
        assert after["processing_time"] > stats["processing_time"] and after["data"]["in_flight"] == 0
