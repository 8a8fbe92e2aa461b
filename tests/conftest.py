"""Shared fixtures. Bus tests talk to a real nats-server: one per test, on a random port, with a
temporary JetStream store, always stopped afterwards."""

from __future__ import annotations

import os
from typing import AsyncIterator

import msgspec
import nats
import pytest

from voxbus.config import Config, EmbeddedServerConfig, load_config
from voxbus.server import NatsServer


def embedded_config() -> EmbeddedServerConfig:
    return EmbeddedServerConfig(port=0, monitor_port=0)


@pytest.fixture
async def nats_server(tmp_path) -> AsyncIterator[NatsServer]:
    server = NatsServer(embedded_config(), store_dir=tmp_path / "js")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[nats.aio.client.Client]:
    client = await nats.connect(nats_server.url)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
def config(nats_server: NatsServer, tmp_path) -> Config:
    """The default config pointed at the test's server, with caches under tmp_path."""
    base = load_config(env={})
    return msgspec.structs.replace(
        base,
        nats=msgspec.structs.replace(base.nats, url=nats_server.url),
    )
