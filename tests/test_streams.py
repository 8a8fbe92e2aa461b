import nats
import pytest
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType
from nats.js.errors import APIError

from voxbus.bus import open_bus
from voxbus.config import EmbeddedServerConfig, load_config
from voxbus.errors import ConfigError
from voxbus.server import NatsServer, bundled_config
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
        with pytest.raises(ConfigError, match=r"reserves 3\.4 GiB \(streams\.\*\.max_bytes"):
            async with open_bus(load_config(env={}, overrides={"nats": {"url": server.url}})):
                pass
        small = {f: {"max_bytes": "64MiB"} for f in ("audio", "text", "ctl", "admin", "uploads")}
        async with open_bus(load_config(env={}, overrides={"nats": {"url": server.url}, "streams": small})) as bus:
            assert (await bus.js.stream_info("VOX_AUDIO")).config.max_bytes == 64 << 20


async def test_another_clients_stream_cannot_take_the_voxbus_streams_storage(tmp_path):
    """Finding: an anonymous client's stream without limits filled the store in 2 s, and then every
    voxbus publish failed with 503. The bundled config (here with its limits scaled down to 96 MB)
    makes each stream declare max_bytes, which JetStream reserves: the foreign stream is refused
    unlimited, refused more than what voxbus left, and once full it leaves voxbus's room intact."""
    conf = tmp_path / "nats.conf"
    conf.write_text(bundled_config().read_text().replace("10GB", "96MB"))
    small = {f: {"max_bytes": "8MiB"} for f in ("audio", "text", "ctl", "admin", "uploads")}
    async with NatsServer(EmbeddedServerConfig(port=0, monitor_port=0, config_file=str(conf)),
                          store_dir=tmp_path / "js") as server:
        async with open_bus(load_config(env={}, overrides={"nats": {"url": server.url}, "streams": small})) as bus:
            foreign = (await nats.connect(server.url)).jetstream()  # no credentials, like the finding
            with pytest.raises(APIError) as unlimited:
                await foreign.add_stream(name="FOREIGN", subjects=["junk.>"])
            assert unlimited.value.err_code == 10113  # "account requires a stream config to have max bytes set"
            with pytest.raises(APIError) as too_big:
                await foreign.add_stream(name="FOREIGN", subjects=["junk.>"], max_bytes=90 << 20)
            assert too_big.value.err_code == 10047  # insufficient storage: voxbus holds its 40 MiB
            await foreign.add_stream(name="FOREIGN", subjects=["junk.>"], max_bytes=48 << 20,
                                     discard=DiscardPolicy.NEW)
            chunk, stored_bytes = b"x" * (1 << 20), 0
            for _ in range(60):  # more than it may hold: the last ones are refused as "stream full"
                try:
                    await foreign.publish("junk.fill", chunk)
                    stored_bytes += len(chunk)
                except APIError:
                    break
            assert 40 << 20 <= stored_bytes <= 48 << 20
            frame = b"\0" * 640
            for seq in range(200):  # 128 KB of audio still goes in, as it did not in the finding
                ack = await bus.js.publish(bus.subjects.audio_in("s1"), frame, headers={"Nats-Msg-Id": f"s1:f{seq}"})
                assert ack.stream == "VOX_AUDIO"
            await foreign._nc.close()


async def test_audio_is_sized_to_hold_an_stt_outage_of_the_planned_sessions(nc):
    """streams.audio_hold: AUDIO keeps live_sessions x session_rate x outage, plus a quarter."""
    over = {"streams": {"audio": {"max_bytes": "8MiB"},
                        "audio_hold": {"live_sessions": 10, "outage": "60s", "session_rate": "40KB"}}}
    cfg = load_config(env={}, overrides=over)
    await ensure_streams(nc.jetstream(), Subjects("vox"), cfg.streams)
    assert (await nc.jetstream().stream_info("VOX_AUDIO")).config.max_bytes == 10 * 40_000 * 60 * 5 // 4
    bigger = load_config(env={}, overrides={"streams": {"audio_hold": {"live_sessions": 1, "outage": "60s"}}})
    assert bigger.streams.max_bytes("audio") == 2 << 30  # the configured size already holds more
    with pytest.raises(ConfigError, match=r"outage \(7200 s\) is longer than streams.audio.max_age \(3600 s\)"):
        load_config(env={}, overrides={"streams": {"audio": {"max_age": "1h"},
                                                   "audio_hold": {"live_sessions": 5, "outage": "2h"}}})
