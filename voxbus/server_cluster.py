"""The embedded nats-server as one node of a NATS cluster: its command-line flags, and the
voxbus account's JetStream limits counted cluster-wide. NATS does the clustering itself (routes,
the JetStream meta group, replicated streams); voxbus only starts the node."""

from __future__ import annotations

import re
import socket

from voxbus.config.schema import EmbeddedServerConfig


def cluster_size(config: EmbeddedServerConfig) -> int:
    """Nodes of the cluster (its routes and this node); 1 for a single server."""
    cluster = config.cluster
    if cluster is None:
        return 1
    return len({r.rstrip("/") for r in cluster.routes} | {f"nats://{config.host}:{cluster.port}"})


def cluster_flags(config: EmbeddedServerConfig, client_port: int) -> list[str]:
    cluster = config.cluster
    if cluster is None:
        return []
    # JetStream on a cluster needs one cluster name and a unique server name per node.
    name = cluster.server_name or f"{socket.gethostname()}-{client_port}"
    flags = ["--server_name", name, "--cluster_name", cluster.name, "--cluster", f"nats://{config.host}:{cluster.port}"]
    if cluster.routes:
        flags += ["--routes", ",".join(cluster.routes)]
    return flags


def scale_account_limits(conf_text: str, nodes: int) -> str:
    """The bundled config with the voxbus account's max_file/max_mem multiplied by `nodes`: an R3
    stream reserves its max_bytes on three nodes, all against the one account limit."""
    if nodes == 1:
        return conf_text
    from voxbus.auth.users import MARKER

    base, marker, accounts = conf_text.partition(MARKER)
    scaled = re.sub(r"\b(max_file|max_mem):\s*(\d+)([KMGT]?B)\b",
                    lambda m: f"{m.group(1)}: {int(m.group(2)) * nodes}{m.group(3)}", accounts)
    return base + marker + scaled
