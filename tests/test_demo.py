"""`voxbus demo`, `voxbus ask` and `voxbus up` as a user runs them."""

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import pytest

from tests.helpers import run_voxbus, wer

pytestmark = pytest.mark.models



async def test_demo_runs_the_voice_loop_with_nothing_running(tmp_path):
    out_wav = tmp_path / "reply.wav"
    rc, out, err = await run_voxbus("demo", "What is the weather like today?", "-o", str(out_wav))
    assert rc == 0, err
    heard = next(line for line in out.splitlines() if line.startswith("you said: "))
    assert wer("What is the weather like today?", heard.removeprefix("you said: ")) <= 0.2, heard
    assert "assistant:" in out and out_wav.is_file() and str(out_wav) in out
    for stage in ("STT (transcript published)", "LLM first token", "LLM done", "first audio chunk"):
        assert stage in out, out
    assert "Traceback" not in err


async def test_ask_streams_and_keeps_the_conversation(tmp_path):
    rc, out, err = await run_voxbus("ask", "Say hello.", "--conversation", "chat-1", "--max-tokens", "8",
                                "--temperature", "0")
    assert rc == 0 and out.strip(), err
    assert "prompt tokens from cache" in err
    rc, out2, err2 = await run_voxbus("ask", "Again please.", "--conversation", "chat-1", "--max-tokens", "8")
    assert rc == 0, err2
    saved = json.loads((Path(os.environ["XDG_DATA_HOME"]) / "voxbus" / "conversations" / "chat-1.json").read_text())
    assert [m["role"] for m in saved] == ["system", "user", "assistant", "user", "assistant"]
    assert saved[3]["content"] == "Again please."
    rc, _, err3 = await run_voxbus("ask", "x", "--conversation", "bad.id")
    assert rc == 2 and "contains '.'" in err3


async def test_up_serves_and_drains_on_ctrl_c(nats_server):
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "voxbus", "up", "--nats", nats_server.url,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    assert b"voxbus up on" in line and b"stt, tts, assistant" in line
    proc.send_signal(signal.SIGINT)
    rest, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0 and b"draining" in rest, err.decode()[-2000:]


async def test_up_answers_only_the_sessions_that_ask(nats_server):
    from voxbus.bus import connect
    from voxbus.messages import ReplyChunk, Transcript, codec
    from voxbus.subjects import Subjects

    clip = str(Path(__file__).resolve().parent.parent / "examples" / "welcome.flac")
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "voxbus", "up", "--nats", nats_server.url,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    nc = await connect(nats_server.url, "up-test")
    s = Subjects()
    transcripts: dict[str, int] = {}
    replies: dict[str, list[ReplyChunk]] = {}

    async def on_transcript(msg):
        t = codec.decode(msg.data, Transcript)
        transcripts[t.session] = transcripts.get(t.session, 0) + 1

    async def on_reply(msg):
        r = codec.decode(msg.data, ReplyChunk)
        replies.setdefault(r.session, []).append(r)

    try:
        assert b"voxbus up on" in await asyncio.wait_for(proc.stdout.readline(), 60)
        await nc.subscribe(s.all_transcripts(), cb=on_transcript)
        await nc.subscribe(s.all_replies(), cb=on_reply)
        for session, extra in (("plain-1", ()), ("ask-1", ("--assistant",))):
            rc, out, err = await run_voxbus("publish", clip, "--session", session, *extra, "--nats", nats_server.url)
            assert rc == 0, err
        for _ in range(1200):
            if transcripts.get("plain-1") and any(r.final for r in replies.get("ask-1", [])):
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # time for a reply the plain session must not get
        assert transcripts.get("plain-1") and transcripts.get("ask-1"), transcripts
        assert any(r.final for r in replies.get("ask-1", [])) and "".join(r.text for r in replies["ask-1"]).strip()
        assert "plain-1" not in replies, "a session that did not ask got an answer"
    finally:
        await nc.close()
        proc.send_signal(signal.SIGINT)
        await _drained(proc, 60)


async def _drained(proc, timeout: float) -> None:
    """`voxbus up` exits within `timeout` of Ctrl-C; if not, the failure shows what it was doing."""
    output = asyncio.ensure_future(proc.communicate())  # (reading its pipes all along, so it never blocks)
    try:
        await asyncio.wait_for(asyncio.shield(output), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        _, err = await output
        raise AssertionError(f"voxbus up did not drain within {timeout:g}s of Ctrl-C; its last log lines:\n"
                             + "\n".join(err.decode(errors="replace").splitlines()[-30:])) from None
