"""voxbus on a real 3-node nats-server cluster with streams.replicas: 3: the streams and buckets
are replicated, and stopping a node (the stream leader itself) mid-session loses nothing."""

import asyncio
import signal
import sys

import nats.errors
import nats.js.errors
import pytest

from tests.cluster import node_named, running_cluster, urls
from tests.helpers import assert_sessions_complete, make_config, running_manager, until_sessions_stream
from tests.speech import speak, write_variant
from voxbus.bus import open_bus
from voxbus.client import ModelClient
from voxbus.consumer_floors import state_bucket
from voxbus.history import stored
from voxbus.stt import SttService


async def test_streams_are_created_with_three_replicas_and_survive_their_leader(tmp_path):
    async with running_cluster(tmp_path) as nodes:
        config = make_config(urls(nodes), tmp_path / "cache", streams={"replicas": 3})
        async with open_bus(config, name="cluster-test") as bus:
            s = bus.subjects
            for family in ("audio", "text", "ctl", "admin"):
                info = await bus.js.stream_info(s.stream(family))
                assert info.config.num_replicas == 3 and len(info.cluster.replicas) == 2, family
            await state_bucket(bus)
            assert (await bus.js.stream_info(f"KV_{s.state_bucket()}")).config.num_replicas == 3
            leader = node_named(nodes, (await bus.js.stream_info(s.stream("text"))).cluster.leader)
            for i in range(50):
                await _store(bus, s.transcript("r3"), i)
            await leader.stop()  # the leader of TEXT, and maybe the node this client is on
            for i in range(50, 100):
                await _store(bus, s.transcript("r3"), i)
            kept = [int(m.data) async for m in stored(bus.js, s.stream("text"), s.transcript("r3"))]
            assert kept == list(range(100))
            assert (await bus.js.stream_info(s.stream("text"))).cluster.leader != leader.config.cluster.server_name


async def _store(bus, subject: str, i: int, within: float = 20.0) -> None:
    """Publish with a message id, again until stored: while the stream elects a new leader a
    publish gets no answer (NATS says to retry), and the id keeps a retry from storing twice."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        try:
            await bus.js.publish(subject, str(i).encode(), headers={"Nats-Msg-Id": f"r3-{i}"}, timeout=2)
            return
        except (nats.errors.NoRespondersError, nats.errors.TimeoutError, nats.js.errors.NoStreamResponseError):
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.2)


SENTENCES = ["Good morning and welcome to the meeting.", "First we look at the budget for next year.",
             "Then we talk about the new office."]
SESSIONS = [f"r3-{i}" for i in range(3)]


@pytest.mark.models
async def test_a_node_stopped_mid_session_loses_no_frame_and_no_transcript(tmp_path):
    async with running_cluster(tmp_path) as nodes:
        url = urls(nodes)
        async with open_bus(make_config(url, tmp_path / "cache", streams={"replicas": 3}), name="setup") as setup:
            leader = node_named(nodes, (await setup.js.stream_info(setup.subjects.stream("audio"))).cluster.leader)
        # The services know only the leader's address: they find the other nodes from the cluster
        # itself, and must move to one of them when it stops.
        config = make_config(leader.url, tmp_path / "cache", streams={"replicas": 3})
        async with running_manager(config) as (bus, manager):
            audio, rate = await speak(ModelClient.from_bus(bus), SENTENCES)
            path = write_variant(audio, rate, tmp_path / "talk.wav")
            s = bus.subjects
            async with SttService(bus) as stt:
                publishers = [await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "voxbus", "publish", str(path), "--session", sid, "--realtime",
                    "--nats", url, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
                    for sid in SESSIONS]
                await until_sessions_stream(bus, SESSIONS)
                await asyncio.sleep(1.0)  # a second into every session
                assert bus.nc.connected_url.port == leader.port
                await leader.stop()  # AUDIO's leader, and the node every service is connected to
                results = [await asyncio.wait_for(p.communicate(), 120) for p in publishers]
                for p, (out, err) in zip(publishers, results):
                    assert p.returncode == 0, err.decode()
                for _ in range(900):
                    if stt.stats.sessions_done >= len(SESSIONS):
                        break
                    await asyncio.sleep(0.1)
            await assert_sessions_complete(bus, SESSIONS, " ".join(SENTENCES))
            assert bus.nc.connected_url.port != leader.port
            # The publishers ran with the default config (1 replica): they did not strip the copies.
            assert (await bus.js.stream_info(s.stream("audio"))).config.num_replicas == 3


async def test_three_voxbus_server_nodes_form_a_cluster_from_the_command_line(tmp_path):
    from tests.cluster import free_port
    route_ports = [free_port() for _ in range(3)]
    routes = ",".join(f"nats://127.0.0.1:{p}" for p in route_ports)
    ports = [free_port() for _ in range(3)]
    procs = [await asyncio.create_subprocess_exec(
        sys.executable, "-m", "voxbus", "server", "--port", str(ports[i]), "--monitor-port", "0",
        "--store-dir", str(tmp_path / f"n{i}"), "--routes", routes, "--cluster-port", str(route_ports[i]),
        "--server-name", f"node-{i}", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        for i in range(3)]
    try:
        for proc in procs:
            lines = [await asyncio.wait_for(proc.stdout.readline(), 30) for _ in range(2)]
            assert b"cluster voxbus: routes on 127.0.0.1:" in lines[0] and b"nats-server ready" in lines[1], lines
        url = ",".join(f"nats://127.0.0.1:{p}" for p in ports)
        async with open_bus(make_config(url, tmp_path / "cache", streams={"replicas": 3}), name="cli-cluster") as bus:
            info = await bus.js.stream_info(bus.subjects.stream("audio"))
            assert info.config.num_replicas == 3
            assert {info.cluster.leader, *(r.name for r in info.cluster.replicas)} == {"node-0", "node-1", "node-2"}
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            await asyncio.wait_for(proc.communicate(), 30)
            assert proc.returncode == 0
