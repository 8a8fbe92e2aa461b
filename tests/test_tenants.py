"""Tenants on one server with auth on: each sees only its own sessions, live and stored, and
fills only its own quota. Real nats-server, credentials made as `voxbus creds new --tenant`
makes them, and every refusal comes from the server."""

import asyncio
import time

import pytest
import pytest_asyncio

from tests.test_auth import _until_accepted, config_for, denied
from voxbus.auth.tenants import tenant_subjects
from voxbus.auth.users import UserRegistry, write_secret
from voxbus.bus import open_bus
from voxbus.cli.server_cmd import prepare_streams
from voxbus.client import ModelClient
from voxbus.config import EmbeddedServerConfig, load_config
from voxbus.errors import PermissionDenied
from voxbus.history import stored
from voxbus.messages import AudioFormat, AudioFrame, codec
from voxbus.server import NatsServer
from voxbus.subjects import Subjects

FMT = AudioFormat(rate=16000)
QUOTA = 32 << 20


@pytest_asyncio.fixture
async def tenants(tmp_path):
    server = await NatsServer(EmbeddedServerConfig(port=0, monitor_port=0, auth=True), store_dir=tmp_path / "js").start()
    try:
        registry = UserRegistry(server.auth_dir, Subjects("vox"))
        registry.add_tenant("a", QUOTA)
        registry.add_tenant("b", QUOTA)
        registry.add_tenant("tiny", 2 << 20)
        creds = {}
        for name, role, tenant in (("a", "client", "a"), ("b", "client", "b"), ("tiny", "client", "tiny"),
                                   ("stt", "stt", None), ("manager", "manager", None)):
            creds[name] = tmp_path / f"{name}.nk"
            write_secret(creds[name], registry.add(f"t-{name}", role, tenant))
        server.reload()
        await _until_accepted(server.url, creds["a"])
        await prepare_streams(server, load_config(env={}, overrides={"nats": {"url": server.url}}))
        yield server, creds
    finally:
        await server.stop()


def tenant_config(server, creds, tenant):
    cfg = config_for(server, creds)
    import msgspec
    return msgspec.structs.replace(cfg, nats=msgspec.structs.replace(cfg.nats, prefix=f"vox_{tenant}"))


async def frame(bus, sid, seq):
    return await bus.js.publish(bus.subjects.audio_in(sid), b"\0" * 640,
                                headers=codec.meta_headers(AudioFrame(format=FMT, seq=seq)))


async def test_a_tenant_sees_only_its_own_sessions_live_and_stored(tenants):
    server, creds = tenants
    b_subjects = tenant_subjects(Subjects("vox"), "b")
    async with open_bus(tenant_config(server, creds["b"], "b"), name="b", embed=False) as b_bus:
        await frame(b_bus, "b-secret", 0)  # B's stored session
    async with open_bus(tenant_config(server, creds["a"], "a"), name="a", embed=False) as bus:
        s = bus.subjects
        assert s.prefix == "vox_a"
        for seq in range(3):
            await frame(bus, "a-1", seq)
        assert len([m async for m in stored(bus.js, s.stream("audio"), s.audio_in("a-1"))]) == 3  # its replay
        nc, js = bus.nc, bus.js

        async def subscribe(subject):
            await nc.subscribe(subject)
            await nc.flush()
            await asyncio.sleep(1.5)  # (the refusal comes asynchronously)
        await denied(nc, subscribe(b_subjects.all_transcripts()), b_subjects.all_transcripts())
        await denied(nc, subscribe(b_subjects.all_audio_in()), b_subjects.all_audio_in())
        await denied(nc, subscribe(Subjects("vox").all_transcripts()), "vox.text")  # nor the untenanted ones
        b_audio = b_subjects.stream("audio")
        await denied(nc, js.stream_info(b_audio), f"$JS.API.STREAM.INFO.{b_audio}")
        await denied(nc, js.get_msg(b_audio, seq=1), f"$JS.API.STREAM.MSG.GET.{b_audio}")
        await denied(nc, js.get_msg(b_audio, seq=1, direct=True), f"$JS.API.DIRECT.GET.{b_audio}")
        await denied(nc, js.get_last_msg(b_audio, b_subjects.audio_in("b-secret"), direct=True), "$JS.API.DIRECT.GET")
        await denied(nc, js.pull_subscribe(b_subjects.audio_in("b-secret"), stream=b_audio), "$JS.API.CONSUMER.CREATE")
        await denied(nc, js.publish(b_subjects.audio_in("b-1"), b"x", timeout=3), b_subjects.audio_in("b-1"))
        await denied(nc, js.delete_stream(s.stream("audio")), "$JS.API.STREAM.DELETE")  # not even its own
        await denied(nc, js.purge_stream(s.stream("text")), "$JS.API.STREAM.PURGE")
        with pytest.raises(PermissionDenied, match="admin.unload"):
            await ModelClient.from_bus(bus).unload("whisper-tiny-en")


async def test_a_tenant_past_its_quota_gets_a_clear_error_and_the_others_go_on(tenants):
    server, creds = tenants
    async with open_bus(tenant_config(server, creds["tiny"], "tiny"), name="tiny", embed=False) as bus:
        refused = None
        for seq in range(10_000):  # 640-byte frames: the 1.6 MiB audio stream holds about 2,300
            try:
                await frame(bus, "filling", seq)
            except Exception as exc:
                refused = exc
                break
        assert refused is not None and seq > 1000, seq
        assert "maximum bytes" in str(refused).lower(), refused
    async with open_bus(tenant_config(server, creds["b"], "b"), name="b", embed=False) as b_bus:
        for seq in range(100):
            await frame(b_bus, "b-goes-on", seq)


async def test_the_publisher_says_the_quota_is_full_at_once(tenants, tmp_path):
    """`voxbus publish` into a full tenant: a one-line error naming the quota, not a minute of
    retries and a count of lost frames."""
    import numpy as np
    import soundfile as sf

    from tests.helpers import run_voxbus

    server, creds = tenants
    wav = tmp_path / "long.wav"
    sf.write(str(wav), np.zeros(16000 * 60, np.float32), 16000)  # 60 s of 16 kHz: 1.9 MB > the 1.6 MiB audio stream
    started = time.monotonic()
    rc, out, err = await run_voxbus("publish", str(wav), "--session", "too-much", "--nats", server.url,
                                    "--creds", str(creds["tiny"]), "--config", str(tenant_yaml(tmp_path, "tiny")))
    assert rc == 1, (out, err)
    assert "the stream is full" in err and "storage quota" in err and "vox_tiny.audio.too-much.in" in err, err
    assert time.monotonic() - started < 30, "the quota error must not wait out the retry window"


def tenant_yaml(tmp_path, tenant):
    path = tmp_path / f"{tenant}.yaml"
    path.write_text(f"nats:\n  prefix: vox_{tenant}\n")
    return path


@pytest.mark.models
async def test_one_stt_and_one_manager_serve_each_tenant_and_a_tenant_added_later(tenants, tmp_path, monkeypatch):
    """The STT process (one credential, role stt) runs an STT for every tenant in the tenants
    bucket, and for one added while it runs (`voxbus creds new --tenant --quota`); tenants'
    model calls reach the one manager through the server's subject mapping."""
    from tests.helpers import run_voxbus, running_manager, wer
    from tests.speech import speak
    from voxbus import tenancy
    from voxbus.ingest import SessionPublisher
    from voxbus.messages import Transcript
    from voxbus.stt import SttService
    from voxbus.tenancy import TenantServices

    server, creds = tenants
    manager_config = load_config(env={}, overrides={"nats": {"url": server.url, "creds": str(creds["manager"])},
                                                    "manager": {"cache_dir": str(tmp_path / "cache")}})
    sentence = "Please remember to water the plants in the garden."
    monkeypatch.setattr(tenancy, "LOOK_EVERY_S", 0.5)
    async with running_manager(manager_config), \
            open_bus(config_for(server, creds["stt"]), name="stt", embed=False) as stt_bus, \
            TenantServices(stt_bus, [SttService]) as served:
        assert sorted(served.running) == ["a", "b", "tiny"]
        late = tmp_path / "late.nk"
        rc, out, err = await run_voxbus("creds", "new", "--role", "client", "--tenant", "late", "--quota", "16MiB",
                                        "-o", str(late), "--store-dir", str(server.store_dir))
        assert rc == 0 and "its streams are ready" in out, (out, err)
        await _until_accepted(server.url, late)
        for tenant, key in (("a", creds["a"]), ("late", late)):
            async with open_bus(tenant_config(server, key, tenant), name=tenant, embed=False) as bus:
                audio, rate = await speak(ModelClient.from_bus(bus), [sentence])  # (mapped to the manager)
                await SessionPublisher(bus, f"{tenant}-talk").publish_pcm(
                    (audio * 32767).astype("<i2").tobytes(), AudioFormat(rate=rate))
                s, texts = bus.subjects, []
                for _ in range(300):
                    texts = [codec.decode(m.data, Transcript)
                             async for m in stored(bus.js, s.stream("text"), s.transcript(f"{tenant}-talk"))]
                    if texts:
                        break
                    await asyncio.sleep(0.2)
                assert texts and wer(sentence, texts[0].text) <= 0.2, (tenant, texts)
        assert "late" in served.running


@pytest.mark.models
async def test_a_tenant_conversation_follows_its_kv_state_through_the_mapping(tenants, tmp_path):
    """A tenant's later turns go to the manager holding the conversation (its own subject, mapped
    from the tenant's prefix like every model call), and reuse the cached history."""
    from tests.helpers import running_manager

    server, creds = tenants
    manager_config = load_config(env={}, overrides={"nats": {"url": server.url, "creds": str(creds["manager"])},
                                                    "manager": {"cache_dir": str(tmp_path / "cache")}})
    async with running_manager(manager_config, "tenant-mgr") as (_, manager), \
            open_bus(tenant_config(server, creds["a"], "a"), name="a", embed=False) as bus:
        client = ModelClient.from_bus(bus)
        history = [{"role": "system", "content": "You are a travel guide. Answer briefly."}]
        usage = []
        for question in ("Where is the river?", "What is there to eat?"):
            history.append({"role": "user", "content": question})
            done = await client.complete(messages=history, conversation="a-chat", max_tokens=8, temperature=0.0)
            history.append({"role": "assistant", "content": done.text})
            usage.append(done.usage)
        assert client.homes["a-chat"] == "tenant-mgr"
        served = {e.name: e.num_requests for e in manager.service.endpoints}
        assert served["llm-generate"] == 1 and served["llm-generate-here"] == 1, served  # turn 2: its own subject
        assert usage[1].cached_tokens >= usage[1].prompt_tokens - 30, usage[1]
