"""The nats section: how to reach NATS, and the embedded server (single or a cluster node)."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from voxbus.config.base import _Cfg
from voxbus.config.units import Duration

Port = Annotated[int, Meta(ge=0, le=65535)]


class ClusterConfig(_Cfg):
    """This server as one node of a NATS cluster (JetStream clustered: replicated streams, a meta leader)."""

    name: str = "voxbus"
    """The cluster's name: the same on every node."""
    port: Port = 6222
    """Where this node listens for the other nodes' routes (on the server's host)."""
    routes: list[str] = msgspec.field(default_factory=list)
    """The other nodes' route URLs, e.g. nats://10.0.0.2:6222 (listing this node too is fine)."""
    server_name: str | None = None
    """This node's unique name; None: <hostname>-<client port>."""


class EmbeddedServerConfig(_Cfg):
    host: str = "127.0.0.1"
    port: Port = 4222
    monitor_port: Port = 8222
    store_dir: str | None = None
    """JetStream file store; None: <user data dir>/voxbus/jetstream."""
    config_file: str | None = None
    """nats-server config; None: the one shipped with voxbus."""
    ready_timeout: Duration = Duration(20)
    auth: bool = False
    """Authentication on: only credentials made by `voxbus creds new` connect, each with its role's permissions."""
    tls: bool = False
    """TLS on the client port: with tls_cert/tls_key, or a local CA and server certificate made on first use (<store>/tls/)."""
    tls_cert: str | None = None
    tls_key: str | None = None
    cluster: ClusterConfig | None = None
    """None: a single server; set: a node of a cluster (docs/DEPLOY.md)."""


class NatsConfig(_Cfg):
    url: str | None = None
    """None: use the embedded server (start it when nothing listens on its port)."""
    prefix: str = "vox"
    connect_timeout: Duration = Duration(5)
    creds: str | None = None
    """Credentials to connect with: an nkey seed file from `voxbus creds new`, or a NATS .creds file; None: none (a server without auth)."""
    tls_ca: str | None = None
    """CA certificate to verify a TLS server with ($VOXBUS_NATS_TLS_CA); None: no TLS (the embedded server's own CA when this process starts it)."""
    embedded: EmbeddedServerConfig = msgspec.field(default_factory=EmbeddedServerConfig)
