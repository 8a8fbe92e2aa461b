"""A real 3-node nats-server cluster on loopback ports for tests, each node started the way
`voxbus server --routes ...` starts one (its own store), and stopped with the test."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path

from voxbus.config import EmbeddedServerConfig
from voxbus.config.schema import ClusterConfig
from voxbus.server import NatsServer


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cluster_nodes(tmp: Path, size: int = 3) -> list[NatsServer]:
    route_ports = [free_port() for _ in range(size)]
    routes = [f"nats://127.0.0.1:{p}" for p in route_ports]
    return [NatsServer(EmbeddedServerConfig(port=free_port(), monitor_port=0, cluster=ClusterConfig(
        name="voxbus-test", port=route_ports[i], routes=routes, server_name=f"n{i}")), store_dir=tmp / f"n{i}")
        for i in range(size)]


def urls(nodes: list[NatsServer]) -> str:
    return ",".join(n.url for n in nodes)


@contextlib.asynccontextmanager
async def running_cluster(tmp: Path, size: int = 3):
    nodes = cluster_nodes(tmp, size)
    try:
        await asyncio.gather(*(n.start() for n in nodes))
        yield nodes
    finally:
        await asyncio.gather(*(n.stop() for n in nodes))


def node_named(nodes: list[NatsServer], name: str) -> NatsServer:
    return next(n for n in nodes if n.config.cluster.server_name == name)
