"""Sharing the STT work stream's partitions among the live STT processes.

The `<PREFIX>_STT_MEMBERS` bucket (TTL `stt.member_ttl`) holds two kinds of keys:
- `m.<member>`: a live process, refreshed every third of the TTL. The TTL removes the key of a
  process that stops refreshing it (SIGKILL, a lost machine).
- `p.<partition>`: the lock of a partition, naming its holder. It is taken with a KV create
  (which succeeds only when the key is absent), kept with updates that name the revision last
  written (so a holder whose lock expired and was taken finds out), and deleted when the
  partition is given up.

Every process reads the member list on its beat and wants the partitions that rendezvous hashing
of (member, partition) gives it, so all agree without talking to each other, and a member
joining or leaving moves only about 1/K of the partitions. It binds a partition's consumer only
while it holds the lock: member lists read a moment apart (two processes starting together each
see only themselves) never let two processes bind one partition, which would delete and
recreate its durable under each other. A partition wanted by one process and still locked by
another moves on the holder's next beat, when it sees the new list, unbinds and unlocks.

A move is a per-partition restart: the gainer binds the durable at its ack floor (KeptConsumer),
so frames not yet covered by stored transcripts come again, in order (consumers.py).
Transcripts carry message ids, so a transcript stored by both sides of a move is kept once.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import socket
import time
from typing import Awaitable, Callable

import nats.errors
from nats.js.errors import KeyWrongLastSequenceError, NoKeysError
from nats.js.kv import KeyValue

log = logging.getLogger(__name__)

MEMBER, LOCK = "m.", "p."


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
        self.locks: dict[int, tuple[int, float]] = {}  # partition -> (lock revision, when last written)
        self.members: list[str] = []
        self.info = json.dumps({"host": socket.gethostname(), "pid": os.getpid()}).encode()

    @property
    def held(self) -> set[int]:
        return set(self.locks)

    async def run(self) -> None:
        """The beat (after the first step()): say this process is alive, read the members, keep,
        take and give up partitions."""
        while True:
            await asyncio.sleep(self.ttl / 3)
            await self.step()

    async def step(self) -> None:
        await self.kv.put(MEMBER + self.member, self.info)
        try:
            keys = await self.kv.keys()
        except NoKeysError:
            keys = []
        members = sorted({k[len(MEMBER):] for k in keys if k.startswith(MEMBER)} | {self.member})
        if members != self.members:
            log.info("STT members: %s (this process: %s)", ", ".join(members), self.member)
            self.members = members
        wanted = assigned(members, self.member, self.partitions)
        for p in sorted(self.held):
            if p not in wanted:
                await self._give_up(p)
            elif not await self._keep(p):
                log.warning("STT partition %d: its lock was lost (this process stalled past stt.member_ttl?); "
                            "giving it up", p)
                await self._give_up(p, unlock=False)
        for p in sorted(wanted - self.held):
            if await self._lock(p):
                await self.gain(p)

    async def _lock(self, p: int) -> bool:
        try:
            self.locks[p] = (await self.kv.create(LOCK + str(p), self.member.encode()), time.monotonic())
            return True
        except KeyWrongLastSequenceError:
            return False  # still held by another process: it lets go on its next beat

    async def _keep(self, p: int) -> bool:
        rev, written = self.locks[p]
        try:
            self.locks[p] = (await self.kv.update(LOCK + str(p), self.member.encode(), last=rev), time.monotonic())
            return True
        except KeyWrongLastSequenceError:
            return False  # it expired and someone else took it
        except (nats.errors.Error, asyncio.TimeoutError):
            return time.monotonic() - written < self.ttl  # a hiccup: keep it while the lock cannot have expired

    async def _give_up(self, p: int, unlock: bool = True) -> None:
        rev, _ = self.locks.pop(p)
        await self.lose(p)  # unbound before the lock goes: the next holder finds the consumer free
        if unlock:
            await self._unlock(p, rev)

    async def _unlock(self, p: int, rev: int) -> None:
        try:
            await self.kv.delete(LOCK + str(p), last=rev)
        except Exception as exc:  # taken meanwhile, or the connection is gone: it expires
            log.debug("could not unlock STT partition %d: %s", p, exc)

    async def leave(self) -> None:
        """The process stops (its consumers already unbound): remove its locks and its member key,
        so the others take its partitions on their next beat instead of after member_ttl."""
        for p, (rev, _) in list(self.locks.items()):
            await self._unlock(p, rev)
        self.locks.clear()
        try:
            await self.kv.delete(MEMBER + self.member)
        except Exception as exc:  # the connection may be gone already: the key expires then
            log.debug("could not remove STT member %s: %s", self.member, exc)
