"""Supervised service loops (voxbus/service_base.py). Pure logic: the loop is a fake that fails
on purpose, no bus involved."""

import asyncio

import pytest

from voxbus import service_base
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
