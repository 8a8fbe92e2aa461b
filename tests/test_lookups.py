"""Reading what earlier runs stored about a session (voxbus/lookups.py), on a real nats-server."""

import asyncio
import time

import pytest

from voxbus.config import load_config
from voxbus.lookups import last_stored
from voxbus.streams import ensure_streams
from voxbus.subjects import Subjects


async def test_a_read_while_the_stream_is_missing_waits_for_it_instead_of_saying_none(nc):
    js, subjects, cfg = nc.jetstream(), Subjects("vox"), load_config(env={})
    await ensure_streams(js, subjects, cfg.streams)
    subject = subjects.transcript("s1")
    await js.publish(subject, b"first")
    assert (await last_stored(js, "VOX_TEXT", subject)).data == b"first"
    assert await last_stored(js, "VOX_TEXT", subjects.transcript("never")) is None  # "none" is an answer

    await js.delete_stream("VOX_TEXT")  # now nothing answers a direct get on it
    read = asyncio.create_task(last_stored(js, "VOX_TEXT", subject))
    await asyncio.sleep(0.6)
    assert not read.done(), "a read that got no answer must not pass for 'nothing stored'"
    await ensure_streams(js, subjects, cfg.streams)
    await js.publish(subject, b"again")
    assert (await asyncio.wait_for(read, 10)).data == b"again"


async def test_a_read_that_never_gets_an_answer_raises(nc, monkeypatch):
    js, subjects = nc.jetstream(), Subjects("vox")
    monkeypatch.setattr("voxbus.lookups.RETRY", {"attempts": 3, "timeout": 2.0, "wait_initial": 0.05, "wait_max": 0.1})
    started = time.monotonic()
    with pytest.raises(Exception) as raised:  # no voxbus streams on this server at all
        await last_stored(js, "VOX_TEXT", subjects.transcript("s1"))
    assert type(raised.value).__name__ in ("NoRespondersError", "TimeoutError", "ServiceUnavailableError")
    assert time.monotonic() - started < 5
