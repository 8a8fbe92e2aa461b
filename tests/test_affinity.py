"""Conversation affinity across two `voxbus manager` processes: a conversation's later turns go
to the manager holding its KV state (so they evaluate only the new tokens), and when that
manager is SIGKILLed the conversation goes on elsewhere, recomputed once, with the same replies
a single manager gives."""

import asyncio
import os
import signal
import subprocess
import sys

import pytest
import yaml

from tests.helpers import stop_processes
from voxbus.bus import connect
from voxbus.client import ModelClient
from voxbus.config import ClientConfig, Duration
from voxbus.subjects import Subjects

pytestmark = pytest.mark.models

QUESTIONS = ["Tell me about the river in one sentence.", "What do people eat there?", "And what about winter?",
             "Where should I stay?"]
CONVERSATIONS = 4


def _start(nats_url: str, cfg_file, name: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "voxbus", "manager", "--nats", nats_url, "--config", str(cfg_file),
                             "--id", name, "--preload", "gemma3-270m"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


async def _turns(client: ModelClient, history: dict, turns: range, prefix: str = "c") -> dict:
    """Round-robin turns of every conversation: {(conv, turn): (text, cached, prompt, manager)}."""
    out = {}
    for turn in turns:
        for conv in range(CONVERSATIONS):
            history[conv].append({"role": "user", "content": QUESTIONS[turn]})
            done = await client.complete(messages=history[conv], conversation=f"{prefix}{conv}", max_tokens=12,
                                         temperature=0.0)
            history[conv].append({"role": "assistant", "content": done.text})
            out[conv, turn] = (done.text, done.usage.cached_tokens, done.usage.prompt_tokens,
                               client.homes[f"{prefix}{conv}"])
    return out


def _fresh() -> dict:
    return {c: [{"role": "system", "content": f"You are guide number {c} of a travel office. Answer briefly."}]
            for c in range(CONVERSATIONS)}


async def test_turns_follow_their_kv_state_and_survive_its_manager(nats_server, tmp_path):
    cfg_file = tmp_path / "voxbus.yaml"
    cfg_file.write_text(yaml.safe_dump({"manager": {"cache_dir": str(tmp_path / "cache")}}))
    procs = {name: _start(nats_server.url, cfg_file, name) for name in ("mgr-a", "mgr-b")}
    nc = await connect(nats_server.url, "affinity-test")
    try:
        for proc in procs.values():
            while "loaded gemma3-270m" not in (line := await asyncio.to_thread(proc.stdout.readline)):
                assert line, "manager exited early"
        client = ModelClient(nc, Subjects(), ClientConfig(deadline=Duration(60), accept_timeout=Duration(1),
                                                          liveness_timeout=Duration(2), retries=5))
        history = _fresh()
        before = await _turns(client, history, range(0, 2))
        for conv in range(CONVERSATIONS):
            _, cached, prompt, home = before[conv, 1]
            assert home == before[conv, 0][3], f"conversation {conv} moved while its manager was up"
            assert cached >= prompt - 40, (conv, cached, prompt)  # all but the new question reused
        gone = before[0, 1][3]  # the manager holding conversation 0 (and maybe others)
        os.kill(procs[gone].pid, signal.SIGKILL)
        procs[gone].wait(timeout=10)
        after = await _turns(client, history, range(2, 4))
        survivor = ({"mgr-a", "mgr-b"} - {gone}).pop()
        for conv in range(CONVERSATIONS):
            assert after[conv, 2][3] == after[conv, 3][3] == survivor
            if before[conv, 1][3] == gone:  # recomputed once on the survivor, then cached there again
                assert after[conv, 2][1] < 10, after[conv, 2]
            assert after[conv, 3][1] >= after[conv, 3][2] - 40, after[conv, 3]
        # The same conversations from the start on the survivor alone: token for token the same.
        reference = await _turns(client, _fresh(), range(0, 4), prefix="ref")
        for key, (text, *_rest) in {**before, **after}.items():
            assert text == reference[key][0], (key, text, reference[key][0])
    finally:
        await nc.close()
        stop_processes(procs.values())
