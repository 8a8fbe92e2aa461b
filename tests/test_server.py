"""The embedded nats-server launcher against the real binary."""

import os
import signal
import socket
import subprocess
import sys
import time

import nats
import psutil
import pytest

from voxbus.config import EmbeddedServerConfig
from voxbus.errors import ServerError
from voxbus.server import NatsServer


async def test_starts_ready_with_jetstream_and_stops_clean(tmp_path):
    server = NatsServer(EmbeddedServerConfig(port=0, monitor_port=0), store_dir=tmp_path / "js")
    await server.start()
    pid = server.pid
    try:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        await js.add_stream(name="T", subjects=["t.>"], max_bytes=1 << 20)
        ack = await js.publish("t.x", b"hello")
        assert ack.seq == 1
        await nc.close()
    finally:
        await server.stop()
        await server.stop()  # idempotent
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert (tmp_path / "js" / "jetstream").is_dir()


async def test_port_taken_is_a_clear_error(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        server = NatsServer(EmbeddedServerConfig(port=port, monitor_port=0), store_dir=tmp_path)
        with pytest.raises(ServerError, match=f"port {port} is already in use"):
            await server.start()
    assert server.process is None


async def test_missing_binary_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ServerError, match="nats-server binary not found"):
        await NatsServer(EmbeddedServerConfig(port=0, monitor_port=0), store_dir=tmp_path).start()


def _children(pid):
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_cli_server_stops_on_signal_without_orphans(tmp_path, sig):
    proc = subprocess.Popen(
        [sys.executable, "-m", "voxbus", "server", "--port", "0", "--monitor-port", "0",
         "--store-dir", str(tmp_path / "js")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = proc.stdout.readline()
        assert "nats://127.0.0.1:" in line and "nats://127.0.0.1:0" not in line, line + proc.stderr.read()
        children = _children(proc.pid)
        assert any("nats-server" in c.name() for c in children)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "stopped" in out
        time.sleep(0.2)
        for child in children:
            assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
    finally:
        if proc.poll() is None:
            proc.kill()


def test_cli_server_killed_leaves_no_orphan(tmp_path):
    """Even SIGKILL of voxbus takes nats-server down (PR_SET_PDEATHSIG)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "voxbus", "server", "--port", "0", "--monitor-port", "0",
         "--store-dir", str(tmp_path / "js")], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    proc.stdout.readline()
    children = [c for c in _children(proc.pid) if "nats-server" in c.name()]
    assert children
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive


def test_cli_server_port_taken_exits_nonzero(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        res = subprocess.run([sys.executable, "-m", "voxbus", "server", "--port", str(port), "--monitor-port", "0",
                              "--store-dir", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 1
    assert "already in use" in res.stderr and "Traceback" not in res.stderr


async def test_a_store_from_before_the_voxbus_account_keeps_its_streams(tmp_path):
    """Stores written under NATS's default account ($G) are moved to the bundled config's account
    on first start, so sessions stored before the upgrade stay readable."""
    plain = tmp_path / "plain.conf"
    plain.write_text("jetstream {}\n")
    async with NatsServer(EmbeddedServerConfig(port=0, monitor_port=0, config_file=str(plain)),
                          store_dir=tmp_path / "js") as old:
        nc = await nats.connect(old.url)
        await nc.jetstream().add_stream(name="OLD", subjects=["old.>"], max_bytes=1 << 20)
        await nc.jetstream().publish("old.x", b"kept")
        await nc.close()
    assert (tmp_path / "js" / "jetstream" / "$G").is_dir()
    async with NatsServer(EmbeddedServerConfig(port=0, monitor_port=0), store_dir=tmp_path / "js") as new:
        nc = await nats.connect(new.url)
        msg = await nc.jetstream().get_msg("OLD", seq=1)
        assert msg.data == b"kept"
        await nc.close()


def _listening(pid):
    return {(c.laddr.ip, c.laddr.port) for c in psutil.Process(pid).net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN}


@pytest.mark.parametrize("auth", [False, True])
def test_cli_server_binds_loopback_and_warns_when_open(tmp_path, auth):
    """Without --auth voxbus says at start-up that the port is open to whoever reaches it; either
    way the client and monitoring ports listen on loopback only unless --host says otherwise."""
    cmd = [sys.executable, "-m", "voxbus", "server", "--port", "0", "--monitor-port", "0",
           "--store-dir", str(tmp_path / "js")] + (["--auth"] if auth else [])
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = [proc.stdout.readline() for _ in range(2 if auth else 1)]  # (--auth says where creds are first)
        assert "nats://127.0.0.1:" in lines[-1], lines
        servers = [c for c in _children(proc.pid) if "nats-server" in c.name()]
        assert servers
        addresses = _listening(servers[0].pid)
        assert len(addresses) >= 2 and {ip for ip, _ in addresses} == {"127.0.0.1"}, addresses
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    warned = "without authentication: anyone who can reach 127.0.0.1" in err
    assert warned is not auth, err
