from nats.js.api import RetentionPolicy, StorageType

from voxbus.config import load_config
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
