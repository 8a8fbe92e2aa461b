"""Sharing the STT work stream's partitions among the live STT processes.

Each process keeps a key of its own in the `<PREFIX>_STT_MEMBERS` bucket, refreshed every third
of `stt.member_ttl`; the bucket's TTL removes the key of a process that stops refreshing it
(SIGKILL, a lost machine). Every process reads the member list on the same beat and takes the
partitions that rendezvous hashing of (member, partition) gives it, so all agree without talking
to each other, and a member joining or leaving moves only about 1/K of the partitions.

A partition moves like a per-partition restart. The process that loses it unsubscribes at
once and forgets its sessions without publishing anything more of them. The one that gains it
binds the durable (KeptConsumer), which waits while the other still holds it (`push_bound`) and
then resumes from the ack floor, so frames not yet covered by stored transcripts come again, in
order (consumers.py). Two processes briefly disagreeing about the member list therefore never
both take a partition; at worst it waits a beat. Transcripts carry message ids, so a transcript
stored by both sides of a move is kept once.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import socket
from typing import Awaitable, Callable

from nats.js.errors import NoKeysError
from nats.js.kv import KeyValue

log = logging.getLogger(__name__)


def owner(members: list[str], partition: int) -> str:
    """The member that holds `partition` (highest random weight)."""
    return max(members, key=lambda m: hashlib.blake2b(f"{m}/{partition}".encode(), digest_size=8).digest())


def assigned(members: list[str], me: str, partitions: int) -> set[int]:
    return {p for p in range(partitions) if owner(members, p) == me} if members else set()


class PartitionOwner:
    """Which partitions this process holds; `gain(p)` and `lose(p)` are called as that changes."""

    def __init__(self, kv: KeyValue, member: str, partitions: int, ttl: float,
                 gain: Callable[[int], Awaitable[None]], lose: Callable[[int], Awaitable[None]]) -> None:
        self.kv, self.member, self.partitions, self.ttl = kv, member, partitions, ttl
        self.gain, self.lose = gain, lose
        self.held: set[int] = set()
        self.members: list[str] = []
        self.info = json.dumps({"host": socket.gethostname(), "pid": os.getpid()}).encode()

    async def run(self) -> None:
        """The heartbeat (after the first step()): say this process is alive, read the members,
        take and give up partitions."""
        while True:
            await asyncio.sleep(self.ttl / 3)
            await self.step()

    async def step(self) -> None:
        await self.kv.put(self.member, self.info)
        try:
            members = sorted(await self.kv.keys())
        except NoKeysError:
            members = []
        if self.member not in members:  # (our own put is read back: a lagging replica, say)
            members = sorted({*members, self.member})
        if members != self.members:
            log.info("STT members: %s (this process: %s)", ", ".join(members), self.member)
            self.members = members
        await self._apply(assigned(members, self.member, self.partitions))

    async def _apply(self, wanted: set[int]) -> None:
        for p in sorted(self.held - wanted):
            self.held.discard(p)
            await self.lose(p)
        for p in sorted(wanted - self.held):
            self.held.add(p)
            await self.gain(p)

    async def leave(self) -> None:
        """Remove this member's key (the process stops), so the others take its partitions on
        their next beat instead of after member_ttl."""
        try:
            await self.kv.delete(self.member)
        except Exception as exc:  # the connection may be gone already: the key expires then
            log.debug("could not remove STT member %s: %s", self.member, exc)
