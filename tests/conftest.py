"""Shared fixtures. Bus tests talk to a real nats-server: one per test, on a random port, with a
temporary JetStream store, always stopped afterwards."""

from __future__ import annotations

import os
from typing import AsyncIterator

import nats
import pytest

from tests.helpers import embedded_config
from voxbus.server import NatsServer


@pytest.fixture(autouse=True)
def hermetic_config(tmp_path_factory, monkeypatch):
    """No user voxbus.yaml or VOXBUS_* variable of the machine running the tests leaks in."""
    home = tmp_path_factory.mktemp("xdg")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "cache"))
    for name in list(os.environ):
        if name.startswith("VOXBUS"):
            monkeypatch.delenv(name)
    # Commands run without --nats start a private server, never one that happens to listen on 4222.
    monkeypatch.setenv("VOXBUS__NATS__EMBEDDED__PORT", "0")
    monkeypatch.chdir(home)


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
