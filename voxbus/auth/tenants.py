"""Tenants: deployments that share one server, its ModelManager and its services, and cannot
see each other.

A tenant is a prefix of its own, `<prefix>_<tenant>`: its sessions' subjects, its streams
(`<PREFIX>_<TENANT>_AUDIO`...), its STATE bucket. Permissions built from that prefix isolate
its live and stored data: the JetStream API subjects name the stream, so another tenant's
stream info, consumers and direct gets are simply not in a tenant client's permissions. The
tenant's streams are sized from its quota, and refuse new messages when full (discard new), so
a tenant past its quota gets "maximum bytes exceeded" while the others go on. Its model
subjects are mapped by the server to the shared manager's (`<prefix>_<t>.model.stt.transcribe`
-> `<prefix>.model.stt.transcribe`), so one ModelManager serves everyone; admin endpoints other
than `admin.list` are not mapped.
"""

from __future__ import annotations

import msgspec

from voxbus.config.schema import StreamsConfig
from voxbus.config.stream_limits import StreamLimits
from voxbus.config.units import ByteSize
from voxbus.subjects import MODEL_VERBS, Subjects, _token

QUOTA_SHARES = {"audio": 0.80, "text": 0.10, "ctl": 0.05, "admin": 0.025, "uploads": 0.025}
"""How a tenant's quota is split over its streams (audio is almost all of it)."""
MIN_STREAM_BYTES = 1 << 20
TENANT_MODEL_VERBS = {kind: verbs for kind, verbs in MODEL_VERBS.items() if kind != "admin"} | {"admin": ("list",)}


def tenant_subjects(base: Subjects, tenant: str) -> Subjects:
    return Subjects(f"{base.prefix}_{_token(tenant, 'tenant name')}")


def tenant_streams(streams: StreamsConfig, quota: int) -> StreamsConfig:
    """The deployment's stream settings with sizes from the tenant's quota, full streams refusing."""
    sized = {}
    for family, share in QUOTA_SHARES.items():
        limits: StreamLimits = getattr(streams, family)
        sized[family] = msgspec.structs.replace(limits, max_bytes=ByteSize(max(int(quota * share), MIN_STREAM_BYTES)),
                                                discard="new")
    return msgspec.structs.replace(streams, audio_hold=msgspec.structs.replace(streams.audio_hold, live_sessions=0),
                                   **sized)


def model_mappings(base: Subjects, tenant: Subjects) -> dict[str, str]:
    """Server subject mappings: the tenant's model endpoints to the shared manager's."""
    mappings = {tenant.model(kind, verb): base.model(kind, verb)
                for kind, verbs in TENANT_MODEL_VERBS.items() for verb in verbs}
    # A conversation's later turns go to the manager holding its KV state, by that manager's id.
    mappings[tenant.model_at_any("llm", "generate")] = base.model_at_mapped("llm", "generate")
    return mappings


def mapped_targets(base: Subjects) -> list[str]:
    """The subjects a tenant's model calls become (a tenant's client may publish to them)."""
    return [*(base.model(kind, verb) for kind, verbs in TENANT_MODEL_VERBS.items() for verb in verbs),
            base.model_at_any("llm", "generate")]
