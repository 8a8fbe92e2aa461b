"""Reading what earlier runs stored about a session (voxbus/lookups.py), on a real nats-server."""

from voxbus.bus import Bus
from voxbus.config import load_config
from voxbus.lookups import last_stored
from voxbus.streams import ensure_streams
from voxbus.subjects import Subjects


async def test_a_read_finds_the_last_message_or_none_and_puts_a_deleted_stream_back(nc):
    cfg = load_config(env={})
    bus = Bus(nc=nc, js=nc.jetstream(), subjects=Subjects("vox"), config=cfg)
    await ensure_streams(bus.js, bus.subjects, cfg.streams)
    subject = bus.subjects.transcript("s1")
    await bus.js.publish(subject, b"first")
    await bus.js.publish(subject, b"second")
    assert (await last_stored(bus, "VOX_TEXT", subject)).data == b"second"
    assert await last_stored(bus, "VOX_TEXT", bus.subjects.transcript("never")) is None  # "none" is an answer

    await bus.js.delete_stream("VOX_TEXT")  # an operator's mistake: nothing answers a direct get on it now
    assert await last_stored(bus, "VOX_TEXT", subject) is None  # what it held is gone...
    info = await bus.js.stream_info("VOX_TEXT")  # ...but the stream is back, as configured
    assert info.config.subjects == ["vox.text.>", "vox.tts.>"] and info.config.max_bytes == int(cfg.streams.text.max_bytes)
    await bus.js.publish(subject, b"again")
    assert (await last_stored(bus, "VOX_TEXT", subject)).data == b"again"
