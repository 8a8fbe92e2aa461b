"""Run the pipeline a one-shot command needs, reusing whatever already runs.

`voxbus transcribe` (and the other one-shot commands) must work on a fresh machine with nothing
running, and must use the real services when they do run. So: connect to the configured NATS;
when none is configured and none listens on the default port, start a private server (random
port, temporary store, removed afterwards) and run everything in this process. On a server of
someone else's, run in this process only the services nobody else provides, and never a
ModelManager: a manager that is merely slow to answer would get a rogue twin in its queue group
(loading every model a second time), so a missing one is a clear error instead.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import AsyncIterator

import msgspec
from nats.errors import NoRespondersError, TimeoutError as NatsTimeout
from nats.js.errors import NotFoundError

from voxbus.bus import Bus, open_bus
from voxbus.config.schema import Config, EmbeddedServerConfig
from voxbus.errors import Unavailable
from voxbus.server import NatsServer, port_in_use
from voxbus.subjects import Subjects

log = logging.getLogger(__name__)


@dataclass
class Pipeline:
    bus: Bus
    manager: object | None = None  # the in-process ModelManager, when this process runs one
    stt: object | None = None  # the in-process SttService, likewise
    tts: object | None = None
    assistant: object | None = None
    private_server: bool = False


async def manager_running(bus: Bus) -> bool:
    """False only when the server says nobody serves the manager's name; a silent one may be busy."""
    try:
        await bus.nc.request(Subjects.micro("PING", bus.subjects.service_name()), b"", timeout=2.0)
    except NoRespondersError:
        return False
    except NatsTimeout:
        log.warning("a ModelManager is registered but did not answer a ping within 2 s; using it anyway")
    return True


async def service_running(bus: Bus, family: str, service: str) -> bool:
    """Whether some process consumes the service's durable right now."""
    try:
        info = await bus.js.consumer_info(bus.subjects.stream(family), bus.subjects.consumer(service))
    except NotFoundError:
        return False
    return bool(info.push_bound)


@asynccontextmanager
async def local_pipeline(config: Config, name: str, *, stt: bool = True, tts: bool = False,
                         assistant: bool = False) -> AsyncIterator[Pipeline]:
    store = None
    server = None
    if config.nats.url is None:
        emb = config.nats.embedded
        if not (emb.port and port_in_use(emb.host, emb.port)):
            store = tempfile.mkdtemp(prefix="voxbus-js-")
            server = await NatsServer(EmbeddedServerConfig(host=emb.host, port=0, monitor_port=0, store_dir=store)).start()
            config = msgspec.structs.replace(config, nats=msgspec.structs.replace(config.nats, url=server.url))
    try:
        async with AsyncExitStack() as stack:
            bus = await stack.enter_async_context(open_bus(config, name=name))
            pipe = Pipeline(bus=bus, private_server=server is not None)
            if server is not None:
                from voxbus.manager import ModelManager

                pipe.manager = await stack.enter_async_context(ModelManager(bus, manager_id=f"{name}-manager"))
            elif not await manager_running(bus):
                raise Unavailable(f"no ModelManager serves {bus.url}: start one there (`voxbus manager` or "
                                  f"`voxbus up`), or run with nothing listening on it for a private pipeline")
            own = server is not None
            if stt and (own or not await service_running(bus, "audio", "stt")):
                from voxbus.stt import SttService

                log.info("no STT service consuming: running one in this process")
                pipe.stt = await stack.enter_async_context(SttService(bus))
            if tts and (own or not await service_running(bus, "text", "tts")):
                from voxbus.tts import TtsService

                log.info("no TTS service consuming: running one in this process")
                pipe.tts = await stack.enter_async_context(TtsService(bus))
            if assistant and (own or not await service_running(bus, "text", "assistant")):
                from voxbus.assistant import Assistant

                log.info("no assistant consuming: running one in this process")
                pipe.assistant = await stack.enter_async_context(Assistant(bus))
            yield pipe
    finally:
        if server is not None:
            await server.stop()
        if store is not None:
            await asyncio.to_thread(shutil.rmtree, store, True)
