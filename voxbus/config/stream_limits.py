"""The streams section: each JetStream stream's limits, and AUDIO sized for an STT outage."""

from __future__ import annotations

import math
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from voxbus.config.base import _Cfg
from voxbus.config.units import ByteSize, Duration

HOLD_HEADROOM = 1.25
"""AUDIO sized from audio_hold keeps a quarter more than the outage needs: sessions are not all
the same length, and JetStream drops whole blocks, not single messages."""


class StreamLimits(_Cfg):
    max_age: Duration
    max_bytes: ByteSize
    replicas: Annotated[int, Meta(ge=1, le=5)] | None = None
    """Copies of this stream on a NATS cluster; None: streams.replicas."""
    storage: Literal["file", "memory"] = "file"
    discard: Literal["old", "new"] = "old"
    """At max_bytes: drop the oldest messages (old), or refuse new ones with an error (new: a tenant's quota)."""


class AudioHold(_Cfg):
    live_sessions: Annotated[int, Meta(ge=0)] = 0
    """Concurrent live sessions AUDIO must hold while no STT service takes them (a crash, an upgrade); 0: use audio.max_bytes as given."""
    outage: Duration = Duration(900)
    """How long an STT outage AUDIO rides out for that many sessions before it drops untranscribed audio."""
    session_rate: ByteSize = ByteSize(43_000)
    """Bytes AUDIO stores per second of one session (16 kHz mono s16le in 20 ms frames, headers included: 42.4 KB/s measured)."""

    def need(self) -> int:
        return math.ceil(self.live_sessions * int(self.session_rate) * float(self.outage) * HOLD_HEADROOM)


class StreamsConfig(_Cfg):
    replicas: Annotated[int, Meta(ge=1, le=5)] = 1
    """Copies of every voxbus stream and bucket on a NATS cluster (3 rides out the loss of any one node); 1 on a single server."""
    audio: StreamLimits = msgspec.field(default_factory=lambda: StreamLimits(max_age=Duration(86400), max_bytes=ByteSize(2 << 30)))
    text: StreamLimits = msgspec.field(default_factory=lambda: StreamLimits(max_age=Duration(7 * 86400), max_bytes=ByteSize(256 << 20)))
    ctl: StreamLimits = msgspec.field(default_factory=lambda: StreamLimits(max_age=Duration(7 * 86400), max_bytes=ByteSize(64 << 20)))
    admin: StreamLimits = msgspec.field(default_factory=lambda: StreamLimits(max_age=Duration(86400), max_bytes=ByteSize(64 << 20)))
    uploads: StreamLimits = msgspec.field(default_factory=lambda: StreamLimits(max_age=Duration(600), max_bytes=ByteSize(1 << 30)))
    """The Object Store bucket for audio too large for one message (each object removed when its call ends)."""
    audio_hold: AudioHold = msgspec.field(default_factory=AudioHold)
    """Size AUDIO for an STT outage: its max_bytes becomes live_sessions x session_rate x outage x 1.25 when that is more."""

    def __post_init__(self) -> None:
        hold, age = self.audio_hold, float(self.audio.max_age)
        if hold.live_sessions and age and float(hold.outage) > age:
            raise ValueError(f"streams.audio_hold.outage ({float(hold.outage):g} s) is longer than "
                             f"streams.audio.max_age ({age:g} s): audio would expire before the STT is back")

    def replicas_of(self, family: str) -> int:
        own = getattr(self, family).replicas
        return self.replicas if own is None else own

    def max_bytes(self, family: str) -> int:
        """A stream's effective max_bytes: AUDIO's grows to what audio_hold needs."""
        given = int(getattr(self, family).max_bytes)
        return max(given, self.audio_hold.need()) if family == "audio" else given
