"""Gateways are NATS micro services like every voxbus process, so `voxbus status` (and any
`$SRV.PING/INFO/STATS` tool) finds them, with their load."""

from __future__ import annotations

import os
import socket
from typing import Callable

import msgspec

from voxbus import __version__
from voxbus.bus import Bus
from voxbus.messages import codec
from voxbus.messages.status import ServiceStatus
from voxbus.micro import MicroService


async def announce(bus: Bus, kind: str, description: str, where: str,
                   status: Callable[[], ServiceStatus]) -> MicroService:
    micro = await MicroService(
        bus.nc, name=bus.subjects.service_name(kind), version=__version__, description=description,
        metadata={"pid": str(os.getpid()), "host": socket.gethostname(), "listen": where},
        queue_group=bus.subjects.queue_group(kind), stats_data=lambda endpoint: msgspec.to_builtins(status())).start()

    async def answer(msg) -> None:
        if msg.reply:
            await msg.respond(codec.encode(status()))
    await micro.add_endpoint("status", bus.subjects.status(kind), answer)
    return micro
