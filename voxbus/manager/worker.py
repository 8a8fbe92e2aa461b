"""The manager's handle on one model worker process: start it, give it one job at a time, watch it.

A worker that dies (any signal, any exit) fails its running job at once with WorkerDied: its
socket reaches end-of-file the moment the process is gone, so callers learn within milliseconds,
not at a timeout. A running job that makes no progress (no token, no result) for `watchdog`
seconds is taken for hung: the worker is SIGKILLed and handled like any other death. The last
lines the worker wrote to stderr (faulthandler's stack of a native crash among them) are kept
for the `crashed` event.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import psutil

from voxbus.manager import worker_protocol as wp

log = logging.getLogger(__name__)

STDERR_LINES = 30
SOCKET_BUFFER = 4 << 20
_LEVELS = {"WARNING": logging.WARNING, "ERROR": logging.ERROR, "CRITICAL": logging.CRITICAL,
           "Fatal": logging.ERROR, "Traceback": logging.ERROR}  # worker_main's log format, faulthandler

@dataclass
class WorkerExit:
    pid: int
    exit_code: int | None
    signal: str | None
    reason: str
    stderr: list[str] = field(default_factory=list)
    expected: bool = False
    """True when the manager asked it to stop (an unload), not a crash."""


class WorkerDied(Exception):
    def __init__(self, exit: WorkerExit) -> None:
        super().__init__(exit.reason)
        self.exit = exit


class WorkerFailed(Exception):
    """The worker answered a job (or its load) with a Failed message; it is still alive."""

    def __init__(self, failed: wp.Failed) -> None:
        super().__init__(failed.message)
        self.failed = failed


def describe(returncode: int) -> tuple[int | None, str | None, str]:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return None, name, f"killed by {name}"
    return returncode, None, f"exited with status {returncode}"


class ModelWorker:
    def __init__(self, model_id: str, index: int, *, watchdog: float,
                 on_exit: Callable[["ModelWorker", WorkerExit], None],
                 on_cache: Callable[[wp.Cache], None] | None = None) -> None:
        self.model_id = model_id
        self.index = index
        self.watchdog = watchdog
        self.on_exit = on_exit
        self.on_cache = on_cache
        self.state = "starting"  # starting | idle | reserved (a job is on its way) | busy | stopping | dead
        self.proc: asyncio.subprocess.Process | None = None
        self.loaded: wp.Loaded | None = None
        self.exit: WorkerExit | None = None
        self.jobs = 0
        self.peak_rss = 0
        self.vram = 0  # its GPU memory at the last measurement (NVML, per process)
        self._ps: psutil.Process | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._stderr: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self._reply: asyncio.Future | None = None  # the Loaded/Failed or Result/Failed awaited now
        self._on_text: Callable[[str], None] | None = None
        self._job = 0
        self._progress = 0.0
        self._killed_for = ""
        self._stopping = False
        self._tasks: list[asyncio.Task] = []
        self._stderr_done: asyncio.Task | None = None
        self._exit_lock = asyncio.Lock()

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else 0

    @property
    def alive(self) -> bool:
        return self.exit is None and self.proc is not None

    @property
    def free(self) -> bool:
        return self.state == "idle"

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self, load: wp.Load, timeout: float) -> wp.Loaded:
        """Spawn the process and load the model in it; raises WorkerFailed or WorkerDied."""
        parent, child = socket.socketpair()
        for sock in (parent, child):  # room for a whole 30 s utterance, so it goes in one write
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
        try:
            # Spawned from the event loop's thread: PR_SET_PDEATHSIG follows the spawning thread.
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "voxbus.manager.worker_main", "--fd", str(child.fileno()),
                "--parent", str(os.getpid()), pass_fds=(child.fileno(),), stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        reader, self._writer = await asyncio.open_unix_connection(sock=parent)
        self._stderr_done = asyncio.create_task(self._read_stderr())
        self._tasks = [asyncio.create_task(self._read(reader)), asyncio.create_task(self._wait()),
                       asyncio.create_task(self._watch())]
        self._reply = asyncio.get_running_loop().create_future()
        self._progress = time.monotonic()
        self._send(load)
        try:
            reply = await asyncio.wait_for(asyncio.shield(self._reply), timeout)
        except asyncio.TimeoutError:
            await self.kill(f"did not load within {timeout:g}s")
            raise WorkerDied(await self._exited()) from None
        if isinstance(reply, wp.Failed):
            await self.stop(5)
            raise WorkerFailed(reply)
        self.loaded, self.state = reply, "idle"
        self.sample_rss()
        return reply

    async def stop(self, timeout: float) -> None:
        """Ask the worker to save its state and exit; SIGKILL it after `timeout`. Safe to repeat."""
        if not self.alive:
            return
        self._stopping = True
        self.state = "stopping"
        with contextlib.suppress(Exception):
            self._send(wp.Stop())
        try:
            await asyncio.wait_for(asyncio.shield(self.proc.wait()), timeout)
        except asyncio.TimeoutError:
            log.warning("worker %s[%d] (pid %d) did not stop within %gs; killing it", self.model_id, self.index,
                        self.pid, timeout)
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        await self._exited()

    async def kill(self, why: str) -> None:
        if self.alive:
            self._killed_for = why
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()

    # -- jobs ------------------------------------------------------------------------------
    async def run(self, job: wp.Job, on_text: Callable[[str], None] | None = None) -> wp.Result:
        """Run one job; raises WorkerFailed (the job failed) or WorkerDied (the worker did)."""
        if self.state not in ("idle", "reserved"):
            raise RuntimeError(f"worker {self.model_id}[{self.index}] is {self.state}")
        self._job += 1
        job.job = self._job
        self.state, self.jobs = "busy", self.jobs + 1
        self._reply = asyncio.get_running_loop().create_future()
        self._on_text = on_text
        self._progress = time.monotonic()
        try:
            self._send(job)
            reply = await asyncio.shield(self._reply)
        finally:
            self._on_text = None
            if self.state == "busy":
                self.state = "idle"
        if isinstance(reply, wp.Failed):
            raise WorkerFailed(reply)
        return reply

    def cancel(self) -> None:
        """Stop the running generation at its next token."""
        if self.state == "busy":
            with contextlib.suppress(Exception):
                self._send(wp.Cancel(job=self._job))

    def sample_rss(self) -> int:
        """This worker's resident memory now; the largest reading is its footprint."""
        try:
            if self._ps is None:
                self._ps = psutil.Process(self.pid)
            rss = self._ps.memory_info().rss
        except (psutil.Error, ValueError):
            return 0
        self.peak_rss = max(self.peak_rss, rss)
        return rss

    def stderr_tail(self) -> list[str]:
        return list(self._stderr)

    # -- plumbing --------------------------------------------------------------------------
    def _send(self, msg) -> None:
        if self._writer is None or self._writer.is_closing():
            raise ConnectionError("worker channel closed")
        self._writer.write(wp.frame(msg))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while (data := await wp.read_frame(reader)) is not None:
            try:
                msg = wp.from_worker.decode(data)
            except Exception as exc:
                log.error("worker %s sent a bad frame (%s); killing it", self.model_id, exc)
                await self.kill("sent a malformed message")
                break
            self._progress = time.monotonic()
            if isinstance(msg, wp.Text):
                if self._on_text is not None and msg.job == self._job:
                    self._on_text(msg.text)
            elif isinstance(msg, wp.Progress):
                pass  # its arrival is the progress the watchdog looks for
            elif isinstance(msg, wp.Cache):
                if self.on_cache is not None:
                    self.on_cache(msg)
            elif self._reply is not None and not self._reply.done():
                self._reply.set_result(msg)
        # End of file: the process is gone or going. A live process with a closed socket is useless.
        await asyncio.sleep(0)
        if self.proc.returncode is None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.proc.wait()), 1.0)
            if self.proc.returncode is None:
                await self.kill("closed its channel")

    async def _read_stderr(self) -> None:
        """The worker's output: its own warnings and errors reach the manager's log at their level,
        the libraries' chatter (llama.cpp prints its setup) only at debug level."""
        stream = self.proc.stdout
        while line := await stream.readline():
            text = line.decode(errors="replace").rstrip()
            self._stderr.append(text)
            level = _LEVELS.get(text.split(" ", 1)[0], logging.DEBUG)
            log.log(level, "[%s#%d pid %d] %s", self.model_id, self.index, self.pid, text)

    async def _wait(self) -> None:
        await self.proc.wait()
        await self._exited()

    async def _watch(self) -> None:
        """The watchdog: a busy worker must show progress at least every `watchdog` seconds."""
        period = max(0.05, min(1.0, self.watchdog / 4))
        while self.alive:
            await asyncio.sleep(period)
            if self.state == "busy" and time.monotonic() - self._progress > self.watchdog:
                log.error("worker %s[%d] (pid %d) made no progress for %gs: killing it", self.model_id,
                          self.index, self.pid, self.watchdog)
                await self.kill(f"hung: no progress for {self.watchdog:g}s (manager.watchdog)")

    async def _exited(self) -> WorkerExit:
        """Once the process is gone: record why, fail what waits on it, tell the owner (once)."""
        async with self._exit_lock:
            if self.exit is None:
                await self.proc.wait()
                if self._stderr_done is not None:  # faulthandler's last words may still be in the pipe
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(asyncio.shield(self._stderr_done), 0.5)
                self._record_exit()
            return self.exit

    def _record_exit(self) -> None:
        code, sig, reason = describe(self.proc.returncode)
        if self._killed_for:
            reason = f"{self._killed_for} ({reason})"
        self.exit = WorkerExit(pid=self.pid, exit_code=code, signal=sig, reason=reason,
                               stderr=self.stderr_tail(), expected=self._stopping and not self._killed_for)
        self.state = "dead"
        if self._writer is not None:
            self._writer.close()
        if self._reply is not None and not self._reply.done():
            self._reply.set_exception(WorkerDied(self.exit))
            self._reply.exception()  # retrieved: nobody may be awaiting it (a stop during a load)
        for task in self._tasks:
            if task is not asyncio.current_task():
                task.cancel()
        self.on_exit(self, self.exit)
