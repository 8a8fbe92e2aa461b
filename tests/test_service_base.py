"""Supervised service loops (voxbus/service_base.py), and the health they report through the
service's micro STATS. The loops are fakes that fail on purpose; the second test answers over a
real nats-server."""

import asyncio

import json

import pytest

from tests.helpers import make_config, until
from voxbus import service_base
from voxbus.bus import open_bus
from voxbus.messages import ServiceStatus, codec
from voxbus.service_base import BusService


async def test_a_loop_that_dies_is_started_again_and_a_loop_that_keeps_dying_makes_the_service_unhealthy(
        monkeypatch, caplog):
    monkeypatch.setattr(service_base, "RESTART_WAIT_S", (0.01, 0.02))
    service = BusService()
    runs = []

    async def flaky():
        runs.append(1)
        if len(runs) <= 2:
            raise RuntimeError("boom")
        await asyncio.sleep(3600)  # the third run stays up

    task = service._supervised("flaky", flaky)
    for _ in range(200):
        if len(runs) == 3:
            break
        await asyncio.sleep(0.01)
    assert len(runs) == 3 and len(service.restarts["flaky"]) == 2 and service.healthy
    assert sum("task flaky died" in r.getMessage() for r in caplog.records) == 2

    async def broken():
        raise RuntimeError("always")

    doomed = service._supervised("broken", broken)
    for _ in range(300):
        if not service.healthy:
            break
        await asyncio.sleep(0.01)
    assert not service.healthy and any("keeps dying" in r.getMessage() for r in caplog.records)
    for t in (task, doomed):
        t.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_service_whose_loop_keeps_dying_says_so_in_its_micro_stats(nats_server, tmp_path, monkeypatch):
    monkeypatch.setattr(service_base, "RESTART_WAIT_S", (0.01, 0.02))

    class Flaky(BusService):
        service_kind = "flaky"

    async with open_bus(make_config(nats_server.url, tmp_path / "cache")) as bus:
        service = Flaky()
        await service._announce(bus, "a service whose only loop fails")
        s = bus.subjects

        async def stats() -> dict:
            reply = await bus.nc.request(s.micro("STATS", s.service_name("flaky")), b"", timeout=2)
            (endpoint,) = json.loads(reply.data)["endpoints"]
            return endpoint["data"]
        assert (await stats())["healthy"] is True
        ping = json.loads((await bus.nc.request(s.micro("PING", "vox-flaky"), b"", timeout=2)).data)
        assert ping["name"] == "vox-flaky" and ping["id"] == service._micro.id

        async def broken():
            raise RuntimeError("always")
        task = service._supervised("flaky-loop", broken)
        await until(lambda: not service.healthy, 5, "the loop to fail five times")
        data = await stats()
        assert data["healthy"] is False and data["restarts"]["flaky-loop"] >= 5, data
        answer = codec.decode((await bus.nc.request(s.status("flaky"), b"", timeout=2)).data, ServiceStatus)
        assert answer.service == "flaky" and not answer.healthy and answer.instance == service._micro.id
        task.cancel()
        await service._unsubscribe()
        with pytest.raises(Exception):  # gone from discovery once stopped
            await bus.nc.request(s.micro("PING", "vox-flaky"), b"", timeout=0.5)
