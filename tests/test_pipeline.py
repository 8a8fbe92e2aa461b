"""No accidental managers: a one-shot command on someone else's server never starts a ModelManager
of its own (it would join the real one's queue group and load every model again); only a fully
private run, with nothing else listening, does."""

import asyncio
import sys
import time

import msgspec
import pytest

from tests.helpers import make_config, run_voxbus, running_manager
from voxbus.subjects import Subjects

pytestmark = pytest.mark.models


async def test_ask_on_a_server_without_a_manager_is_a_clear_error(nats_server):
    started = time.monotonic()
    rc, out, err = await run_voxbus("ask", "Hello?", "--nats", nats_server.url, timeout=60)
    assert rc == 1 and "no ModelManager serves" in err and "voxbus manager" in err, err
    assert "Traceback" not in err and time.monotonic() - started < 30


async def managers_seen(nc, service: str) -> set[str]:
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    await nc.publish(Subjects.micro("PING", service), b"", reply=inbox)
    found = set()
    end = time.monotonic() + 0.3
    while (left := end - time.monotonic()) > 0:
        try:
            found.add(msgspec.json.decode((await sub.next_msg(timeout=left)).data)["id"])
        except Exception:
            break
    await sub.unsubscribe()
    return found


async def test_ask_uses_the_running_manager_and_never_adds_one(nats_server, tmp_path):
    config = make_config(nats_server.url, tmp_path / "cache")
    async with running_manager(config, "the-manager") as (bus, manager):
        service = bus.subjects.service_name()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "voxbus", "ask", "Say hi.", "--max-tokens", "4", "--nats", nats_server.url,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        seen: set[str] = set()
        while proc.returncode is None:
            seen |= await managers_seen(bus.nc, service)
            try:
                await asyncio.wait_for(proc.wait(), 0.2)
            except asyncio.TimeoutError:
                pass
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        assert seen == {manager.service.id}, "only the running manager ever answered"
        assert manager.pool.slots["gemma3-270m"].stats.requests == 1
