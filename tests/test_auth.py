"""A real nats-server with auth on (`voxbus server --auth`'s configuration): who may do what.

Every credential is made the way `voxbus creds new` makes it (an nkey user in the registry, the
server reloaded), and every check drives a real connection: the server itself refuses what a
role may not do, and voxbus turns that refusal into a prompt error naming the subject."""

import asyncio
import time
from pathlib import Path

import nats
import pytest
import pytest_asyncio

from tests.helpers import run_voxbus
from voxbus.auth.users import UserRegistry, write_secret
from voxbus.auth.violations import guarded
from voxbus.bus import connect, open_bus
from voxbus.cli.server_cmd import prepare_streams
from voxbus.client import ModelClient
from voxbus.config import EmbeddedServerConfig, load_config
from voxbus.errors import PermissionDenied, ServerError
from voxbus.history import stored
from voxbus.messages import AudioFormat, AudioFrame, codec
from voxbus.server import NatsServer
from voxbus.subjects import Subjects

ROLES = ("client", "stt", "tts", "assistant", "manager", "operator")


@pytest_asyncio.fixture
async def auth_server(tmp_path):
    server = await NatsServer(EmbeddedServerConfig(port=0, monitor_port=0, auth=True), store_dir=tmp_path / "js").start()
    try:
        await prepare_streams(server, load_config(env={}, overrides={"nats": {"url": server.url}}))
        registry = UserRegistry(server.auth_dir, Subjects("vox"))
        creds = {}
        for role in ROLES:
            creds[role] = tmp_path / f"{role}.nk"
            write_secret(creds[role], registry.add(f"test-{role}", role))
        server.reload()
        await _until_accepted(server.url, creds["operator"])
        yield server, registry, creds
    finally:
        await server.stop()


async def _until_accepted(url: str, creds: Path) -> None:
    """The reload is asynchronous: wait until the new users are known (a connection made while
    the server still reloads may be cut right after it was accepted)."""
    for _ in range(50):
        try:
            nc = await connect(url, "probe", 2.0, str(creds))
        except ServerError:
            await asyncio.sleep(0.1)
            continue
        await asyncio.sleep(0.3)
        accepted = nc.is_connected
        if accepted:
            await nc.close()
            return
        try:  # (closing a connection the server cut can raise nats-py's inner cancellation)
            await nc.close()
        except asyncio.CancelledError:
            pass
    raise AssertionError("the reloaded server never accepted the new credentials")


def config_for(server, creds) -> object:
    return load_config(env={}, overrides={"nats": {"url": server.url, "creds": str(creds)}})


async def denied(nc, work, prefix: str) -> PermissionDenied:
    """The refusal, which must come as a PermissionDenied well before any timeout."""
    started = time.monotonic()
    with pytest.raises(PermissionDenied) as exc:
        await guarded(nc, work, prefix)
    assert time.monotonic() - started < 2.0, "a refusal must not wait for a timeout"
    return exc.value


async def test_a_connection_without_credentials_is_refused_at_once(auth_server):
    server, _, _ = auth_server
    started = time.monotonic()
    with pytest.raises(ServerError, match="refused the connection: authorization violation"):
        await connect(server.url, "anonymous", 3.0)
    assert time.monotonic() - started < 3.0


async def test_a_client_publishes_and_replays_its_session_but_cannot_administer(auth_server, tmp_path):
    server, _, creds = auth_server
    async with open_bus(config_for(server, creds["client"]), name="client", embed=False) as bus:
        s, fmt = bus.subjects, AudioFormat(rate=16000)
        for seq in range(3):
            await bus.js.publish(s.audio_in("mine"), b"\0" * 640,
                                 headers=codec.meta_headers(AudioFrame(format=fmt, seq=seq)))
        replayed = [m async for m in stored(bus.js, s.stream("audio"), s.audio_in("mine"))]
        assert len(replayed) == 3
        with pytest.raises(PermissionDenied, match="may not publish to vox.model.admin.unload"):
            await ModelClient.from_bus(bus).unload("whisper-tiny-en")
        await denied(bus.nc, bus.js.delete_stream("VOX_AUDIO"), "$JS.API.STREAM.DELETE")
        await denied(bus.nc, bus.js.purge_stream("VOX_TEXT"), "$JS.API.STREAM.PURGE")
        await denied(bus.nc, bus.js.add_stream(name="MINE", subjects=["mine.>"], max_bytes=1 << 20),
                     "$JS.API.STREAM.CREATE")

        async def fake_transcript():
            await bus.nc.publish(s.transcript("mine"), b"{}")  # only the STT writes transcripts
            await bus.nc.flush()
            await asyncio.sleep(1.5)
        await denied(bus.nc, fake_transcript(), s.transcript("mine"))


async def test_the_stt_role_cannot_call_admin_endpoints_or_publish_replies(auth_server):
    server, _, creds = auth_server
    async with open_bus(config_for(server, creds["stt"]), name="stt", embed=False) as bus:
        with pytest.raises(PermissionDenied, match="may not publish to vox.model.admin.list"):
            await ModelClient.from_bus(bus).list_models()
        reply = bus.subjects.reply("someone")

        async def publish_reply():
            await bus.nc.publish(reply, b"{}")
            await bus.nc.flush()
            await asyncio.sleep(1.5)  # (the refusal comes back asynchronously)
        await denied(bus.nc, publish_reply(), reply)


async def test_services_restarted_with_their_roles_resume_their_own_consumers(auth_server):
    """A service binds its durable again at the ack floor by deleting and recreating it, so each
    role may delete its own consumers, and only those: every service (and a partitioned STT,
    whose work stream the operator made) starts, stops and starts again under auth."""
    from tests.helpers import until
    from voxbus.assistant import Assistant
    from voxbus.stt import SttService
    from voxbus.tts import TtsService

    server, _, creds = auth_server
    await prepare_streams(server, load_config(env={}, overrides={"nats": {"url": server.url}, "stt": {"partitions": 3}}))
    for role, service, extra in (("stt", SttService, {}), ("stt", SttService, {"stt": {"partitions": 3}}),
                                 ("tts", TtsService, {}), ("assistant", Assistant, {})):
        config = load_config(env={}, overrides={"nats": {"url": server.url, "creds": str(creds[role])}, **extra})
        for run in range(2):
            async with open_bus(config, name=f"{role}-{run}", embed=False) as bus, service(bus) as svc:
                if extra:
                    await until(lambda: len(svc.partitions.bound) == 3, 20, "the partitions to be bound")
    async with open_bus(config_for(server, creds["stt"]), name="stt", embed=False) as bus:
        s = bus.subjects
        with pytest.raises(PermissionDenied, match="(?i)consumer.delete.vox_text.vox-tts"):  # not another's
            await guarded(bus.nc, bus.js.delete_consumer(s.stream("text"), s.consumer("tts")), "$JS.API.CONSUMER.DELETE")


async def test_the_operator_may_do_all_of_it(auth_server):
    server, _, creds = auth_server
    async with open_bus(config_for(server, creds["operator"]), name="operator", embed=False) as bus:
        await bus.js.add_stream(name="SCRATCH", subjects=["scratch.>"], max_bytes=1 << 20)
        await bus.js.publish("scratch.x", b"1")
        await bus.js.purge_stream("SCRATCH")
        await bus.js.delete_stream("SCRATCH")
        assert (await bus.js.stream_info("VOX_AUDIO")).config.name == "VOX_AUDIO"
        sub = await bus.nc.subscribe("vox.>")  # every session
        await bus.nc.flush()
        await sub.unsubscribe()


async def test_a_revoked_credential_is_cut_off_and_refused(auth_server):
    server, registry, creds = auth_server
    nc = await connect(server.url, "soon-revoked", 3.0, str(creds["client"]))
    closed = asyncio.Event()
    registry.revoke("test-client")
    server.reload()
    for _ in range(50):
        if not nc.is_connected:
            closed.set()
            break
        await asyncio.sleep(0.1)
    await nc.close()
    assert closed.is_set(), "the revoked user's connection stayed open"
    with pytest.raises(ServerError, match="authorization violation"):
        await connect(server.url, "revoked", 3.0, str(creds["client"]))


async def test_creds_command_writes_a_secret_that_plain_nats_py_connects_with(auth_server, tmp_path):
    server, _, _ = auth_server
    out = tmp_path / "alice.nk"
    rc, stdout, err = await run_voxbus("creds", "new", "--role", "client", "--name", "alice", "-o", str(out),
                                       "--store-dir", str(server.store_dir))
    assert rc == 0, err
    assert out.stat().st_mode & 0o777 == 0o600
    assert out.read_bytes().decode() not in stdout + err  # the secret is never printed
    prefix = next(line.split("inbox_prefix='")[1].split("'")[0] for line in stdout.splitlines() if "nats-py" in line)
    await _until_accepted(server.url, out)
    nc = await nats.connect(server.url, nkeys_seed=str(out), inbox_prefix=prefix, allow_reconnect=False)
    info = await nc.jetstream().stream_info("VOX_AUDIO")  # a JetStream call answered on the scoped inbox
    assert info.config.name == "VOX_AUDIO"
    await nc.close()
    rc, stdout, _ = await run_voxbus("creds", "list", "--store-dir", str(server.store_dir))
    assert rc == 0 and any(line.startswith("alice") and "client" in line and "active" in line
                           for line in stdout.splitlines()), stdout


@pytest.mark.models
async def test_each_service_runs_with_its_own_role_and_a_client_gets_its_transcript(auth_server, tmp_path):
    """The manager and the STT run with their roles' credentials only; a client speaks a
    session through them and reads its transcript back, live and replayed."""
    from tests.helpers import running_manager, wer
    from tests.speech import speak
    from voxbus.ingest import SessionPublisher
    from voxbus.assistant import Assistant
    from voxbus.messages import ReplyChunk, SayRequest, SpeechChunk, Transcript
    from voxbus.stt import SttService
    from voxbus.tts import TtsService

    server, _, creds = auth_server
    manager_config = load_config(env={}, overrides={"nats": {"url": server.url, "creds": str(creds["manager"])},
                                                    "manager": {"cache_dir": str(tmp_path / "cache")}})
    sentence = "Only the right people may read this sentence."
    async with running_manager(manager_config) as _, \
            open_bus(config_for(server, creds["stt"]), name="stt", embed=False) as stt_bus, SttService(stt_bus), \
            open_bus(config_for(server, creds["tts"]), name="tts", embed=False) as tts_bus, TtsService(tts_bus), \
            open_bus(config_for(server, creds["assistant"]), name="assistant", embed=False) as a_bus, \
            Assistant(a_bus), \
            open_bus(config_for(server, creds["client"]), name="client", embed=False) as bus:
        s = bus.subjects
        live = []

        async def on_transcript(msg):
            live.append(codec.decode(msg.data, Transcript))
        await bus.nc.subscribe(s.transcript("auth-1"), cb=on_transcript)
        audio, rate = await speak(ModelClient.from_bus(bus), [sentence])
        replies = []

        async def on_reply(msg):
            replies.append(codec.decode(msg.data, ReplyChunk))
        await bus.nc.subscribe(s.reply("auth-1"), cb=on_reply)
        await SessionPublisher(bus, "auth-1", assistant=True).publish_pcm(
            (audio * 32767).astype("<i2").tobytes(), AudioFormat(rate=rate))
        for _ in range(300):
            if live:
                break
            await asyncio.sleep(0.1)
        replayed = [codec.decode(m.data, Transcript) async for m in stored(bus.js, s.stream("text"), s.transcript("auth-1"))]
        speech = []

        async def on_speech(msg):
            speech.append(codec.decode_meta(msg.headers, SpeechChunk))
        await bus.nc.subscribe(s.audio_out("auth-1"), cb=on_speech)
        await bus.js.publish(s.say("auth-1"), codec.encode(SayRequest(text="Heard you.", final=True)))
        for _ in range(300):
            if any(c.final for c in speech):
                break
            await asyncio.sleep(0.1)
        for _ in range(600):
            if any(r.final for r in replies):
                break
            await asyncio.sleep(0.1)
    assert any(c.final and c.turn == 0 for c in speech), speech  # the TTS, in its role, spoke into the session
    assert any(r.final for r in replies), replies  # and the assistant, in its role, answered
    assert live and wer(sentence, live[0].text) <= 0.2, live
    assert [t.text for t in replayed] == [t.text for t in live]


@pytest.mark.models
async def test_up_with_auth_then_transcribe_with_client_credentials(tmp_path):
    """The main job with auth on: `voxbus up --auth` runs every service in its own role and writes
    a client credential; `voxbus transcribe --creds` with it completes; without it, it is refused."""
    import signal
    import sys

    clip = str(Path(__file__).resolve().parent.parent / "examples" / "welcome.flac")
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "voxbus", "up", "--auth",
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        lines = [await asyncio.wait_for(proc.stdout.readline(), 120) for _ in range(2)]
        assert b"with authentication" in lines[0], lines
        words = lines[1].decode().split()
        url, creds = words[words.index("--nats") + 1], words[words.index("--creds") + 1]
        rc, out, err = await run_voxbus("transcribe", clip, "--nats", url, "--creds", creds)
        assert rc == 0, err[-2000:]
        assert "welcome" in out.lower(), out
        rc, _, err = await run_voxbus("transcribe", clip, "--nats", url)
        assert rc != 0 and "authorization violation" in err, err[-2000:]
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()[-2000:]


async def test_tls_refuses_a_client_without_the_ca_and_admits_one_with_it(tmp_path):
    """`voxbus server --tls` without a certificate of its own makes a local CA on first use."""
    import ssl

    server = await NatsServer(EmbeddedServerConfig(port=0, monitor_port=0, tls=True), store_dir=tmp_path / "js").start()
    try:
        ca = server.tls_ca
        assert ca.is_file() and (ca.parent / "server-key.pem").stat().st_mode & 0o777 == 0o600
        for refused in ({"tls": ssl.create_default_context()}, {}):  # the system's CAs only; no TLS asked for
            with pytest.raises(ssl.SSLCertVerificationError):  # (nats-py upgrades when the server demands TLS)
                await nats.connect(server.url, allow_reconnect=False, connect_timeout=2, **refused)
        nc = await connect(server.url, "with-ca", 3.0, tls_ca=str(ca))
        assert nc.is_connected
        await nc.close()
        async with open_bus(load_config(env={}, overrides={"nats": {"url": server.url, "tls_ca": str(ca)}}),
                            embed=False) as bus:  # the whole voxbus path: streams made over TLS
            assert (await bus.js.stream_info("VOX_AUDIO")).config.name == "VOX_AUDIO"
    finally:
        await server.stop()
