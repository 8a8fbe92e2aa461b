"""A kept consumer warns on the admin subject before the stream's max_age drops what it has not
taken (the size rule is covered with the STT in test_stt_recovery.py)."""

import asyncio

from nats.js.api import StreamConfig

from tests.helpers import make_config, until
from voxbus.bus import open_bus
from voxbus.consumer_floors import KeptConsumer, state_bucket
from voxbus.messages import RetentionWarning, codec


async def test_a_consumer_whose_oldest_message_nears_max_age_is_warned_about(nats_server, tmp_path):
    async with open_bus(make_config(nats_server.url, tmp_path / "cache")) as bus:
        await bus.js.add_stream(StreamConfig(name="AGED", subjects=["aged.>"], max_age=4.0, max_bytes=1 << 20,
                                             duplicate_window=4.0))
        warnings = []

        async def on_warning(msg):
            warnings.append(codec.decode(msg.data, RetentionWarning))
        await bus.nc.subscribe(bus.subjects.admin("retention"), cb=on_warning)

        async def never_acks(msg):  # a consumer that has fallen behind
            pass
        kept = await KeptConsumer(bus, await state_bucket(bus), stream="AGED", durable="aged-reader",
                                  filter_subject="aged.>", cb=never_acks, ack_wait=30, max_ack_pending=100,
                                  start_new=False).bind()
        for i in range(3):
            await bus.js.publish("aged.x", b"%d" % i)
        await kept.check()
        assert warnings == []  # young messages: nothing to say
        await asyncio.sleep(3.4)  # past four fifths of max_age
        await kept.check()
        await until(lambda: warnings, 5, "the retention warning")
        w = warnings[0]
        assert (w.level, w.stream, w.consumer, w.unacknowledged) == ("warning", "AGED", "aged-reader", 3)
        assert w.max_age == 4.0 and 3.2 < w.oldest_age < 4.0, w
        await kept.unsubscribe()
