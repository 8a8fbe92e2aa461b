"""Operator tools against real deployments: `voxbus status` finds every process through NATS
micro discovery (`voxbus up`, its gateways, a second STT process), and `voxbus events` shows the
model events a test caused, as JSON and as a timeline."""

import asyncio
import json
import os
import re
import signal
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import embedded_config, make_config, run_voxbus, running_manager
from voxbus.client import ModelClient
from voxbus.errors import ModelError
from voxbus.server import NatsServer

pytestmark = [pytest.mark.models, pytest.mark.asyncio]


async def status_of(url: str) -> dict:
    rc, out, err = await run_voxbus("status", "--json", "--nats", url, timeout=60)
    assert rc == 0, err
    return json.loads(out)


async def test_status_lists_the_processes_of_up_and_a_second_stt(tmp_path):
    async with NatsServer(embedded_config(), store_dir=tmp_path / "js") as server:
        env = {**os.environ, "VOXBUS__HTTP__PORT": "0", "VOXBUS__WYOMING__URI": "tcp://127.0.0.1:0",
               "VOXBUS__MANAGER__CACHE_DIR": str(tmp_path / "cache")}
        up = await asyncio.create_subprocess_exec(sys.executable, "-m", "voxbus", "up", "--http", "--wyoming", "--nats",
                                                  server.url, stdout=asyncio.subprocess.PIPE,
                                                  stderr=asyncio.subprocess.DEVNULL, env=env)
        stt = None
        try:
            assert "voxbus up on" in (await asyncio.wait_for(up.stdout.readline(), 120)).decode()
            doc = await status_of(server.url)
            kinds = sorted(p["kind"] for p in doc["processes"])
            assert kinds == ["assistant", "http", "manager", "stt", "tts", "wyoming"], doc["processes"]
            assert all(p["version"] and p["uptime_s"] is not None and p["healthy"] for p in doc["processes"])
            audio = next(s for s in doc["streams"] if s["stream"].endswith("_AUDIO"))
            assert audio["max_bytes"] > 0 and any(c["name"] == "vox-stt" for c in audio["consumers"])

            stt = await asyncio.create_subprocess_exec(sys.executable, "-m", "voxbus", "stt", "--nats", server.url,
                                                       stdout=asyncio.subprocess.DEVNULL,
                                                       stderr=asyncio.subprocess.DEVNULL, env=env)
            for _ in range(60):
                doc = await status_of(server.url)
                stts = [p for p in doc["processes"] if p["kind"] == "stt"]
                if len(stts) == 2:
                    break
                await asyncio.sleep(0.5)
            assert len(stts) == 2 and len({p["id"] for p in stts}) == 2, doc["processes"]
            assert sorted(p["standby"] for p in stts) == [False, True]  # (one takes every session, one waits)
            rc, out, err = await run_voxbus("status", "--nats", server.url, timeout=60)
            assert rc == 0 and out.count("\nstt ") == 2 and "VOX_AUDIO" in out, out
        finally:
            for proc in (stt, up):
                if proc is not None and proc.returncode is None:
                    proc.send_signal(signal.SIGINT)
                    await asyncio.wait_for(proc.wait(), 60)


async def test_events_show_the_load_and_the_eviction_the_test_caused(nats_server, tmp_path):
    cache = tmp_path / "cache"
    async with running_manager(make_config(nats_server.url, cache)) as (bus, manager):  # measure the footprints
        client = ModelClient.from_bus(bus)
        for model in ("whisper-tiny-en", "piper-joe"):
            await client.load(model)
        need = {i: manager.pool.loader.expected(manager.pool.slots[i])[0] for i in ("whisper-tiny-en", "piper-joe")}
        for model in need:
            await client.unload(model)
    # Room for the bigger of the two, not for both: loading the voice must evict Whisper.
    budget = {"budgets": {"ram": f"{max(need.values()) + min(need.values()) // 2}B"}}
    async with running_manager(make_config(nats_server.url, cache, manager=budget)) as (bus, manager):
        client = ModelClient.from_bus(bus)
        await client.load("whisper-tiny-en")
        await client.load("piper-joe")
        rc, out, err = await run_voxbus("events", "--json", "--since", "10m", "--nats", nats_server.url, timeout=60)
        assert rc == 0, err
        events = [json.loads(line) for line in out.splitlines()]
        model_events = [(e["event"], e["model"]) for e in events if e["type"] == "model"]
        assert ("loaded", "whisper-tiny-en") in model_events and ("evicted", "whisper-tiny-en") in model_events
        evicted = next(e for e in events if e["type"] == "model" and e["event"] == "evicted")
        assert evicted["reason"] == "make room for piper-joe" and evicted["manager"] == manager.id
        assert model_events.index(("evicted", "whisper-tiny-en")) < len(model_events) - 1  # piper loaded after
        rc, out, err = await run_voxbus("events", "--model", "whisper-tiny-en", "--nats", nats_server.url, timeout=60)
        lines = out.splitlines()
        assert rc == 0 and lines and all("whisper-tiny-en" in line for line in lines), out
        assert any(re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} .*model whisper-tiny-en: evicted \(make room", line)
                   for line in lines), lines
        rc, out, err = await run_voxbus("events", "--since", "yesterday-ish", "--nats", nats_server.url, timeout=60)
        assert rc == 2 and "--since" in err and "Traceback" not in err


async def test_metrics_parse_and_the_request_counter_rises_by_exactly_the_requests_made(nats_server, tmp_path):
    """/metrics on `voxbus http` parses with prometheus_client's own parser; the model's request
    counter rises by exactly the synthesize requests this test made, its errors by the refusals
    they got (by code), and its latency histogram by the requests served."""
    from prometheus_client.parser import text_string_to_metric_families

    from voxbus.gateways.http_app import serving

    families: set[str] = set()

    async def scrape(url: str) -> dict:
        with await asyncio.to_thread(urllib.request.urlopen, f"{url}/metrics", timeout=30) as reply:
            text = reply.read().decode()
        parsed = list(text_string_to_metric_families(text))
        families.update(f.name for f in parsed)  # (a family with no sample here is still declared)
        return {(s.name, tuple(sorted(s.labels.items()))): s.value for family in parsed for s in family.samples}

    tts = (("kind", "tts"), ("manager", "test-manager"), ("model", "piper-joe"))
    key = ("voxbus_model_requests_total", tts)
    count = ("voxbus_model_inference_seconds_count", tts)
    refused = ("voxbus_model_errors_total", tuple(sorted((*tts, ("code", "overloaded")))))
    config = make_config(nats_server.url, tmp_path / "cache", manager={"max_queue": {"tts": 1}})
    async with running_manager(config) as (bus, manager):
        client = ModelClient.from_bus(bus)
        await client.synthesize("Warm up.")
        async with serving(bus, "127.0.0.1", 0) as url:
            before = await scrape(url)
            for text in ("One.", "Two.", "Three."):
                await client.synthesize(text)
            # A burst over the queue limit of 1: some are refused `overloaded`, and counted so.
            burst = await asyncio.gather(*(client.synthesize(f"Burst number {i}.") for i in range(6)),
                                         return_exceptions=True)
            overloaded = sum(isinstance(r, ModelError) and r.code == "overloaded" for r in burst)
            assert overloaded >= 1 and all(isinstance(r, ModelError) and r.code == "overloaded" or
                                           not isinstance(r, BaseException) for r in burst), burst
            after = await scrape(url)
            async with running_manager(config, "test-manager-2"):  # each manager is asked on its own
                both = await scrape(url)
        standalone = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "voxbus", "metrics", "--port", "0", "--nats", nats_server.url,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        try:
            banner = (await asyncio.wait_for(standalone.stdout.readline(), 60)).decode()
            alone = await scrape(re.search(r"(http://\S+)/metrics", banner).group(1))
        finally:
            standalone.send_signal(signal.SIGINT)
            assert await asyncio.wait_for(standalone.wait(), 30) == 0
    assert after[key] - before[key] == 3 + 6, (before.get(key), after.get(key))  # (refusals are requests too)
    assert after[refused] - before.get(refused, 0) == overloaded
    assert after[count] - before[count] == 3 + 6 - overloaded  # one latency per request served
    buckets = sorted((float(dict(labels)["le"]), v) for (name, labels), v in after.items()
                     if name == "voxbus_model_inference_seconds_bucket" and set(tts) <= set(labels))
    assert buckets[-1] == (float("inf"), after[count]) and all(a[1] <= b[1] for a, b in zip(buckets, buckets[1:]))
    assert 0 < after[("voxbus_model_inference_seconds_sum", tts)] < 60 * after[count]
    assert alone[key] == after[key]  # `voxbus metrics` serves the same figures
    assert {dict(labels)["manager"] for name, labels in both if name == "voxbus_model_state"} == {
        "test-manager", "test-manager-2"}
    assert both[key] == after[key]  # (the first manager's counts, not mixed with the second's)
    assert after[("voxbus_manager_reachable", ())] == 1
    assert after[("voxbus_model_memory_bytes", (*tts[:2], ("memory", "ram"), tts[2]))] > 0
    assert after[("voxbus_model_state", (*tts, ("state", "loaded")))] == 1
    assert any(name == "voxbus_process_up" and dict(labels)["kind"] == "manager" for name, labels in after)
    assert any(name == "voxbus_stream_max_bytes" for name, _ in after)
    # docs/OPERATIONS.md's dashboard and alerts name only metrics the exporter writes.
    doc = (Path(__file__).parent.parent / "docs" / "OPERATIONS.md").read_text()
    dashboard = json.loads(doc.split("```json\n", 1)[1].split("```", 1)[0])
    exported = families | {name for name, _ in after}
    exported |= {n + "_total" for n in exported}
    named = set(re.findall(r"voxbus_[a-z0-9_]+", json.dumps(dashboard) + doc.split("```yaml\n", 1)[1].split("```", 1)[0]))
    assert named and named <= exported, named - exported


async def test_retranscribe_reports_no_difference_with_the_same_settings_and_what_changed_with_others(
        nats_server, tmp_path):
    from tests.speech import speak
    from voxbus.ingest import SessionPublisher
    from voxbus.audio import encode_pcm
    from voxbus.messages import AudioFormat
    from voxbus.stt import SttService

    sentences = ["The museum opens early on Sunday morning.", "Tickets are sold at the front desk."]
    async with running_manager(make_config(nats_server.url, tmp_path / "cache")) as (bus, manager):
        async with SttService(bus):
            client = ModelClient.from_bus(bus)
            audio, rate = await speak(client, sentences)
            done = asyncio.Event()

            async def finished(msg) -> None:
                done.set()
            await bus.nc.subscribe(bus.subjects.control("rt-1", "transcribed"), cb=finished)
            await SessionPublisher(bus, "rt-1").publish_pcm(encode_pcm(audio, AudioFormat(rate=rate)),
                                                             AudioFormat(rate=rate))
            await asyncio.wait_for(done.wait(), 60)

            rc, out, err = await run_voxbus("replay", "rt-1", "--retranscribe", "--json", "--nats", nats_server.url)
            assert rc == 0, err
            same = json.loads(out)
            assert not same["changed"] and same["wer"] == 0 and len(same["new"]) == len(same["stored"]) == 2, same

            other = tmp_path / "other.yaml"
            other.write_text("stt:\n  max_utterance: 1s\n")  # cut every second: words split, text changes
            rc, out, err = await run_voxbus("replay", "rt-1", "--retranscribe", "--config", str(other), "--nats",
                                            nats_server.url)
            assert rc == 0, err
            assert "re-transcribed with whisper-tiny-en" in out and "changed" in out and "WER 0.0 %" not in out, out
            assert "[-" in out or "{+" in out, out
            rc, out, err = await run_voxbus("replay", "--retranscribe", "--all", "--since", "1h", "--nats",
                                            nats_server.url)
            assert rc == 0 and "rt-1: same" in out and out.strip().endswith("1 sessions, 0 changed"), (out, err)
