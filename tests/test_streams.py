import pytest
from nats.js.api import RetentionPolicy, StorageType

from voxbus.bus import open_bus
from voxbus.config import EmbeddedServerConfig, load_config
from voxbus.errors import ConfigError
from voxbus.server import NatsServer
from voxbus.streams import ensure_streams
from voxbus.subjects import Subjects


async def test_streams_created_with_limits_and_idempotent(nc):
    js = nc.jetstream()
    cfg = load_config(env={"VOXBUS__STREAMS__TEXT__MAX_AGE": "1h"})
    subjects = Subjects("vox")
    names = await ensure_streams(js, subjects, cfg.streams)
    assert names == ["VOX_AUDIO", "VOX_TEXT", "VOX_CTL", "VOX_ADMIN"]
    assert await ensure_streams(js, subjects, cfg.streams) == names  # second call changes nothing
    info = await js.stream_info("VOX_TEXT")
    assert info.config.retention == RetentionPolicy.LIMITS
    assert info.config.storage == StorageType.FILE
    assert info.config.max_age == 3600
    assert info.config.subjects == ["vox.text.>", "vox.tts.>"]
    ack = await js.publish(subjects.transcript("s1"), b"{}")
    assert ack.stream == "VOX_TEXT"


async def test_changed_limits_update_the_stream(nc):
    js = nc.jetstream()
    subjects = Subjects("vox")
    await ensure_streams(js, subjects, load_config(env={}).streams)
    changed = load_config(env={}, overrides={"streams": {"audio": {"max_age": "60s"},
                                                         "uploads": {"max_age": "90s", "max_bytes": "64MiB"}}})
    await ensure_streams(js, subjects, changed.streams)
    assert (await js.stream_info("VOX_AUDIO")).config.max_age == 60
    uploads = (await js.stream_info(f"OBJ_{subjects.upload_bucket()}")).config  # the bucket's own stream
    assert uploads.max_age == 90 and uploads.max_bytes == 64 << 20


async def test_a_server_without_room_for_the_streams_is_a_clear_error(tmp_path):
    """JetStream reserves each stream's max_bytes; a server whose limit is smaller (or taken by
    other prefixes) refuses the streams, and voxbus says which settings to change."""
    conf = tmp_path / "small.conf"
    conf.write_text("jetstream { max_file_store: 1GB }\n")  # less than one prefix's streams reserve
    async with NatsServer(EmbeddedServerConfig(port=0, monitor_port=0, config_file=str(conf)),
                          store_dir=tmp_path / "js") as server:
        with pytest.raises(ConfigError, match=r"reserves 3\.4 GiB \(streams\.\*\.max_bytes\)"):
            async with open_bus(load_config(env={}, overrides={"nats": {"url": server.url}})):
                pass
        small = {f: {"max_bytes": "64MiB"} for f in ("audio", "text", "ctl", "admin", "uploads")}
        async with open_bus(load_config(env={}, overrides={"nats": {"url": server.url}, "streams": small})) as bus:
            assert (await bus.js.stream_info("VOX_AUDIO")).config.max_bytes == 64 << 20
