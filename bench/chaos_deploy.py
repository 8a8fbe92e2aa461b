"""A private voxbus deployment for the chaos run, and the faults it can suffer.

Every part is a real process started the way a user starts it: the embedded nats-server (the
bundled config with its storage limits scaled down, so filling a foreign stream takes a second),
`voxbus manager`, `voxbus stt`, and one `voxbus publish --realtime` per session. Faults act on
those processes and on the server: SIGKILL, SIGSTOP/SIGCONT, a broker restart on the same port and
store, a deleted durable consumer, and a foreign client filling the store.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nats
import yaml
from nats.js.api import DiscardPolicy
from nats.js.errors import APIError

from voxbus.config import EmbeddedServerConfig
from voxbus.server import NatsServer, bundled_config, die_with_parent

STREAMS = {"audio": "256MiB", "text": "64MiB", "ctl": "32MiB", "admin": "32MiB", "uploads": "64MiB"}
"""Smaller than the defaults (3.4 GiB) so the store can be filled quickly; 448 MiB reserved."""
RESERVED = (256 + 64 + 32 + 32 + 64 + 8) << 20  # the streams above and the STATE bucket


class Proc:
    """One voxbus command as a child process, its output in a log file; restartable."""

    def __init__(self, name: str, argv: list[str], logs: Path) -> None:
        self.name, self.argv, self.log = name, argv, logs / f"{name}.log"
        self.p: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> "Proc":
        self.starts += 1
        with open(self.log, "ab") as out:
            out.write(f"\n==== start {self.starts} at {time.strftime('%H:%M:%S')}\n".encode())
            out.flush()
            self.p = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      preexec_fn=die_with_parent)  # no orphan if the run is killed
        return self

    def signal(self, sig: int) -> None:
        if self.p is not None and self.p.poll() is None:
            os.kill(self.p.pid, sig)

    async def kill(self) -> None:
        self.signal(signal.SIGKILL)
        if self.p is not None:
            await asyncio.to_thread(self.p.wait)

    async def stop(self, timeout: float = 15.0) -> None:
        if self.p is None or self.p.poll() is not None:
            return
        self.signal(signal.SIGCONT)  # a stopped process cannot act on SIGTERM
        self.signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(self.p.wait, timeout)
        except subprocess.TimeoutExpired:
            await self.kill()

    def tail(self, n: int = 5) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


class Deployment:
    """nats-server + manager + STT under `root`; `voxbus(...)` builds a command line against it."""

    def __init__(self, root: Path, *, foreign_room: int) -> None:
        self.root = root
        self.logs = root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        conf = root / "nats-server.conf"
        limit = RESERVED + foreign_room
        conf.write_text(bundled_config().read_text().replace("10GB", str(limit)))
        self.server_config = EmbeddedServerConfig(port=0, monitor_port=0, config_file=str(conf))
        self.server: NatsServer | None = None
        self.config_path = root / "voxbus.yaml"
        self.manager = self.stt = None

    @property
    def url(self) -> str:
        return self.server.url

    async def start_server(self) -> None:
        self.server = await NatsServer(self.server_config, store_dir=self.root / "js").start()
        # Later starts (a broker restart) reuse the ports it chose, as a real restart would.
        self.server_config = EmbeddedServerConfig(port=self.server.port, monitor_port=self.server.monitor_port,
                                                  config_file=self.server_config.config_file)

    def write_config(self, session_idle: float) -> None:
        self.config_path.write_text(yaml.safe_dump({
            "nats": {"url": self.url},
            "manager": {"cache_dir": str(self.root / "cache")},
            "streams": {family: {"max_bytes": size} for family, size in STREAMS.items()},
            "stt": {"session_idle": f"{session_idle:g}s"},
        }))

    def voxbus(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "voxbus", *args, "--config", str(self.config_path)]

    async def start_services(self) -> None:
        self.manager = Proc("manager", self.voxbus("manager", "--preload", "whisper-tiny-en",
                                                   "--preload", "piper-joe"), self.logs).start()
        self.stt = Proc("stt", self.voxbus("stt"), self.logs).start()

    async def stop(self) -> None:
        for proc in (self.stt, self.manager):
            if proc is not None:
                await proc.stop()
        if self.server is not None:
            await self.server.stop()


# -- the faults: each returns a line saying what it did ---------------------------------------------
async def kill_and_restart(proc: Proc) -> str:
    pid = proc.p.pid
    await proc.kill()
    await asyncio.sleep(1.0)
    proc.start()
    return f"SIGKILL {proc.name} (pid {pid}), started again"


async def kill_stt(dep: Deployment) -> str:
    return await kill_and_restart(dep.stt)


async def kill_manager(dep: Deployment) -> str:
    return await kill_and_restart(dep.manager)


async def restart_server(dep: Deployment) -> str:
    await dep.server.stop()  # SIGTERM: what is on its way to it is lost
    await asyncio.sleep(0.5)
    await dep.start_server()
    return "nats-server SIGTERM, started again on the same port and store"


async def stop_manager(dep: Deployment, seconds: float) -> str:
    dep.manager.signal(signal.SIGSTOP)
    await asyncio.sleep(seconds)
    dep.manager.signal(signal.SIGCONT)
    return f"SIGSTOP manager for {seconds:g} s, then SIGCONT"


async def delete_consumer(dep: Deployment, stream: str, durable: str) -> str:
    nc = await nats.connect(dep.url)
    try:
        await nc.jetstream().delete_consumer(stream, durable)
    finally:
        await nc.close()
    return f"deleted consumer {durable} of {stream}"


async def fill_foreign_stream(dep: Deployment) -> str:
    """What the finding did (an anonymous client's stream filling the store), then the most it can
    still do: the largest stream the server grants, written until it is refused."""
    nc = await nats.connect(dep.url)
    try:
        js = nc.jetstream()
        try:
            await js.add_stream(name="FOREIGN", subjects=["foreign.>"])
            unlimited = "an unlimited stream was ACCEPTED"
        except APIError as exc:
            unlimited = f"unlimited stream refused ({exc.err_code})"
            size = 1 << 30
            while size >= 1 << 20:
                try:
                    await js.add_stream(name="FOREIGN", subjects=["foreign.>"], max_bytes=size,
                                        discard=DiscardPolicy.NEW)
                    break
                except APIError:
                    size //= 2
        chunk, written = os.urandom(1 << 20), 0
        for _ in range(2048):
            try:
                await js.publish("foreign.fill", chunk)
                written += len(chunk)
            except APIError:
                break
        return f"{unlimited}; filled a foreign stream with {written >> 20} MiB until refused"
    finally:
        await nc.close()
