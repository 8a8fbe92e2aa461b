"""A NATS micro service (the `$SRV` discovery protocol) whose endpoints serve concurrently and
whose statistics count what really happened.

nats-py's `nats.micro` runs an endpoint's handler inside the subscription callback, and nats-py
runs one subscription's callbacks one after another: awaiting inference there would serialise
every request, and spawning a task instead makes its stats count only the spawn. Here each
request is its own task, and `num_requests`, `num_errors`, `processing_time` and
`average_processing_time` are recorded when that task ends, so `$SRV.STATS` shows end-to-end
handling. The PING/INFO/STATS answers follow the micro schema (io.nats.micro.v1), so
`nats micro ls` and any micro client see an ordinary service.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.nuid import NUID

from voxbus.subjects import Subjects

log = logging.getLogger(__name__)

Handler = Callable[[Msg], Awaitable[str | None]]
"""Serves one request; returns None, or the description of the error it answered with."""


@dataclass
class Endpoint:
    name: str
    subject: str
    queue_group: str
    handler: Handler
    num_requests: int = 0
    num_errors: int = 0
    last_error: str = ""
    processing_time: int = 0  # nanoseconds, summed over finished requests
    in_flight: int = 0
    subscription: Any = None

    def stats(self) -> dict[str, Any]:
        done = self.num_requests - self.in_flight
        return {
            "name": self.name, "subject": self.subject, "queue_group": self.queue_group,
            "num_requests": self.num_requests, "num_errors": self.num_errors, "last_error": self.last_error,
            "processing_time": self.processing_time,
            "average_processing_time": self.processing_time // done if done > 0 else 0,
        }


@dataclass
class MicroService:
    nc: Client
    name: str
    version: str
    description: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    queue_group: str = "q"
    stats_data: Callable[[Endpoint], Any] | None = None
    """Extra per-endpoint data for STATS (the micro `data` field)."""

    def __post_init__(self) -> None:
        self.id = NUID().next().decode()
        self.endpoints: list[Endpoint] = []
        self.started = datetime.now(timezone.utc)
        self._control: list = []
        self._tasks: set[asyncio.Task] = set()
        self._stopped = False

    def _identity(self, kind: str) -> dict[str, Any]:
        return {"type": f"io.nats.micro.v1.{kind}_response", "name": self.name, "id": self.id,
                "version": self.version, "metadata": self.metadata}

    def info(self) -> dict[str, Any]:
        return {**self._identity("info"), "description": self.description,
                "endpoints": [{"name": e.name, "subject": e.subject, "queue_group": e.queue_group, "metadata": None}
                              for e in self.endpoints]}

    def stats(self) -> dict[str, Any]:
        endpoints = []
        for e in self.endpoints:
            row = e.stats()
            row["data"] = self.stats_data(e) if self.stats_data else None
            endpoints.append(row)
        started = self.started.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        return {**self._identity("stats"), "started": started, "endpoints": endpoints}

    async def start(self) -> "MicroService":
        answers = {"PING": lambda: self._identity("ping"), "INFO": self.info, "STATS": self.stats}
        for verb, answer in answers.items():
            async def respond(msg: Msg, answer=answer) -> None:
                if msg.reply:
                    await msg.respond(json.dumps(answer()).encode())

            for subject in (Subjects.micro(verb), Subjects.micro(verb, self.name), Subjects.micro(verb, self.name, self.id)):
                self._control.append(await self.nc.subscribe(subject, cb=respond))
        return self

    async def add_endpoint(self, name: str, subject: str, handler: Handler) -> Endpoint:
        endpoint = Endpoint(name, subject, self.queue_group, handler)

        async def spawn(msg: Msg) -> None:
            if self._stopped:
                return
            task = asyncio.create_task(self._serve(endpoint, msg))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        endpoint.subscription = await self.nc.subscribe(subject, queue=self.queue_group, cb=spawn)
        self.endpoints.append(endpoint)
        return endpoint

    async def _serve(self, endpoint: Endpoint, msg: Msg) -> None:
        started = time.perf_counter_ns()
        endpoint.num_requests += 1
        endpoint.in_flight += 1
        error: str | None
        try:
            error = await endpoint.handler(msg)
        except Exception as exc:  # the handler answers its own errors; this is a bug in it
            log.exception("endpoint %s failed", endpoint.name)
            error = repr(exc)
        finally:
            endpoint.in_flight -= 1
            endpoint.processing_time += time.perf_counter_ns() - started
        if error:
            endpoint.num_errors += 1
            endpoint.last_error = error

    async def stop_intake(self) -> None:
        """Stop taking requests (discovery keeps answering until stop()). Safe to call twice."""
        self._stopped = True
        for endpoint in self.endpoints:
            if endpoint.subscription is not None:
                sub, endpoint.subscription = endpoint.subscription, None
                try:
                    await sub.unsubscribe()
                except Exception as exc:  # the connection may already be gone
                    log.debug("unsubscribing %s: %s", endpoint.subject, exc)

    async def drain(self, timeout: float) -> None:
        """Wait up to `timeout` for the requests being served."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)

    async def stop(self) -> None:
        await self.stop_intake()
        for sub in self._control:
            try:
                await sub.unsubscribe()
            except Exception as exc:
                log.debug("unsubscribing discovery: %s", exc)
        self._control.clear()
