"""A voxbus credential from a client in another language: nats.js (the `nats` npm package that
scripts/test.sh installs into tests/js) connects with the seed file `voxbus creds new` wrote and
the inbox prefix it printed, makes a JetStream call, stores a session's frame, and is refused a
subject its role does not have. Needs node; the test says so if it is missing."""

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from tests.helpers import run_voxbus
from tests.test_auth import _until_accepted, auth_server, config_for  # noqa: F401  (auth_server: the fixture)
from voxbus.bus import open_bus
from voxbus.history import stored
from voxbus.messages import AudioFormat, AudioFrame, codec
from voxbus.subjects import Subjects

JS_DIR = Path(__file__).parent / "js"
NODE = shutil.which("node")

pytestmark = pytest.mark.skipif(NODE is None or not (JS_DIR / "node_modules" / "nats").is_dir(),
                                reason="node or tests/js/node_modules missing (scripts/test.sh installs it)")


async def test_nats_js_connects_with_a_voxbus_credential(auth_server, tmp_path):  # noqa: F811
    server, _, creds = auth_server
    seed = tmp_path / "js-client.nk"
    rc, out, err = await run_voxbus("creds", "new", "--role", "client", "--name", "js", "-o", str(seed),
                                    "--store-dir", str(server.store_dir))
    assert rc == 0, err
    prefix = next(line.split("--inbox-prefix ")[1].split()[0] for line in out.splitlines() if "nats CLI" in line)
    await _until_accepted(server.url, seed)
    s = Subjects("vox")
    frame_headers = codec.meta_headers(AudioFrame(format=AudioFormat(rate=16000), seq=0),
                                       {"Nats-Msg-Id": "js-session:f0"})
    proc = await asyncio.create_subprocess_exec(
        NODE, str(JS_DIR / "voxbus_client.mjs"), server.url, str(seed), prefix, s.audio_in("js-session"),
        json.dumps(frame_headers), s.model("admin", "unload"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, stdout.decode() + stderr.decode()
    result = json.loads(stdout.decode().strip().splitlines()[-1])
    assert result["stream"] == "VOX_AUDIO"
    assert result["stored"]["stream"] == "VOX_AUDIO" and result["stored"]["seq"] >= 1
    assert result["denied"] == f"PERMISSIONS_VIOLATION: publish {s.model('admin', 'unload')}"
    async with open_bus(config_for(server, creds["operator"]), name="check", embed=False) as bus:
        frames = [m async for m in stored(bus.js, s.stream("audio"), s.audio_in("js-session"))]
    assert len(frames) == 1 and len(frames[0].data) == 640
    assert codec.decode_meta(frames[0].headers, AudioFrame).seq == 0
