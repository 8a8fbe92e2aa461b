"""Several STT processes share the sessions (stt.partitions): each partition of the work stream is
held by one process at a time, a process that joins takes a share, and one that is SIGKILLed has
its sessions finished by the others, every utterance exactly once. Real nats-server, real
`voxbus stt` processes, the real models."""

import asyncio
import os
import signal
import sys
import time

import pytest

from tests.helpers import make_config, micro_instances, running_manager, until, wer
from tests.speech import speak
from voxbus.audio import encode_pcm
from voxbus.bus import open_bus
from voxbus.client import ModelClient
from voxbus.history import stored
from voxbus.ingest import SessionPublisher
from voxbus.messages import AudioFormat, AudioFrame, SessionError, SessionTranscribed, Transcript, codec
from voxbus.stt import SttService
from voxbus.stt.partitions import PartitionOwner, assigned, owner
from voxbus.stt_work_stream import members_bucket

PARTITIONS = 6
SENTENCES = ["Good morning and welcome to the meeting.", "First we look at the budget for next year.",
             "Then we talk about the new office.", "Thank you all for coming today."]


def fnv1a32(text: str) -> int:
    """The hash nats-server's `partition()` transform uses, to know the victim's sessions up front."""
    h = 0x811C9DC5
    for b in text.encode():
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


def test_every_partition_has_one_owner_and_a_leaving_member_moves_only_its_own():
    """Pure logic (no bus): rendezvous hashing over the member list."""
    members = [f"stt-{i}" for i in range(4)]
    shares = {m: assigned(members, m, 64) for m in members}
    assert sorted(p for share in shares.values() for p in share) == list(range(64))
    assert all(share for share in shares.values())  # 64 partitions: nobody is left out
    rest = members[:2] + members[3:]
    for p in range(64):
        if owner(members, p) != members[2]:
            assert owner(rest, p) == owner(members, p), p  # only the leaver's partitions move


async def _bound(bus) -> dict[int, bool]:
    s = bus.subjects
    return {p: (await bus.js.consumer_info(s.stt_work_stream(), s.consumer(f"stt-p{p}"))).push_bound
            for p in range(PARTITIONS)}


async def _all_bound(bus, timeout: float = 60.0) -> None:
    for _ in range(int(timeout / 0.2)):
        try:
            if all((await _bound(bus)).values()):
                return
        except Exception:  # a partition's consumer not created yet
            pass
        await asyncio.sleep(0.2)
    raise AssertionError(f"not every partition was taken: {await _bound(bus)}")


async def test_a_joining_stt_takes_a_share_and_no_partition_is_held_twice(nats_server, tmp_path):
    """Silence frames (no model call): a second in-process service joins the first; the first
    gives partitions up, the second takes them, and together they hold each exactly once."""
    config = make_config(nats_server.url, tmp_path / "cache", stt={"partitions": PARTITIONS, "member_ttl": "3s"})
    async with open_bus(config, name="first") as b1, open_bus(config, name="second") as b2:
        async with SttService(b1) as first:
            await _all_bound(b1)
            # (the server sees a consumer bound a moment before the service records it as its own)
            await until(lambda: len(first.partitions.bound) == PARTITIONS, 30, "the first service to hold them all")
            assert sorted(first.partitions.bound) == list(range(PARTITIONS))
            async with SttService(b2) as second:
                await until(lambda: second.partitions.bound and len(first.partitions.bound) + len(
                    second.partitions.bound) == PARTITIONS, 30, "the second service to take its share")
                assert not set(first.partitions.bound) & set(second.partitions.bound)
                assert set(second.partitions.bound) == assigned(second.owner.members, second.owner.member, PARTITIONS)
                await _all_bound(b1)
                fmt = AudioFormat(rate=16000)
                for sid in [f"quiet-{i}" for i in range(6)]:
                    pub = SessionPublisher(b1, sid)
                    await pub.publish_pcm(b"\0" * 32000 * 2, fmt)
                await until(lambda: first.stats.sessions_done + second.stats.sessions_done >= 6, 30,
                            "both services to finish the sessions")
                assert first.stats.sessions_done and second.stats.sessions_done  # both took some
            # The second stopped and said so: the first takes everything back.
            await until(lambda: len(first.partitions.bound) == PARTITIONS, 30, "the first to take all back")


async def test_a_partition_is_gained_by_one_process_at_a_time_even_when_member_lists_disagree(nats_server, tmp_path):
    """Two processes starting a moment apart: the first read the member list before the second
    joined, so it wants every partition, while the second already wants its share. The partition
    locks (KV create / update on the revision) let only one take each: the second gains its share
    only once the first, on its next beat, has given it up. (Real bucket; gain/lose record.)"""
    config = make_config(nats_server.url, tmp_path / "cache", stt={"partitions": PARTITIONS, "member_ttl": "30s"})
    async with open_bus(config, name="owners") as bus:
        kv = await members_bucket(bus.js, bus.subjects, config.streams, config.stt)
        holders: dict[int, str] = {}

        def recorder(name):
            async def gain(p):
                assert p not in holders, f"partition {p} gained by {name} while {holders.get(p)} holds it"
                holders[p] = name

            async def lose(p):
                assert holders.pop(p) == name
            return gain, lose
        a = PartitionOwner(kv, "a", PARTITIONS, 30.0, *recorder("a"))
        b = PartitionOwner(kv, "b", PARTITIONS, 30.0, *recorder("b"))
        await a.step()  # b has not joined yet: a takes every partition
        assert sorted(holders) == list(range(PARTITIONS))
        await b.step()  # b sees both and wants its share, which a still holds
        share = assigned(["a", "b"], "b", PARTITIONS)
        assert share and not b.held and all(holders[p] == "a" for p in range(PARTITIONS))
        await a.step()  # a sees b: it gives b's share up (and unlocks it)
        assert a.held == set(range(PARTITIONS)) - share
        await b.step()
        assert b.held == share and {p for p, h in holders.items() if h == "b"} == share
        await b.leave()  # b stops: its locks go at once, and a takes everything back on its beat
        for p in share:
            holders.pop(p)
        await a.step()
        assert a.held == set(range(PARTITIONS)) and len(holders) == PARTITIONS


async def _start_stt(url: str) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "voxbus", "stt", "--nats", url, "--partitions", str(PARTITIONS),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    line = await asyncio.wait_for(proc.stdout.readline(), 90)
    assert b"STT service consuming" in line and b"partitioned: 6" in line, line
    return proc


async def _transcripts(bus, sid: str) -> list[Transcript]:
    s = bus.subjects
    return [codec.decode(m.data, Transcript) async for m in stored(bus.js, s.stream("text"), s.transcript(sid))]


@pytest.mark.models
async def test_three_stt_processes_share_nine_sessions_and_one_sigkilled_loses_nothing(nats_server, tmp_path):
    config = make_config(nats_server.url, tmp_path / "cache", stt={"partitions": PARTITIONS})
    async with running_manager(config) as (bus, manager):
        s = bus.subjects
        audio, rate = await speak(ModelClient.from_bus(bus), SENTENCES)
        fmt = AudioFormat(rate=rate)
        pcm = encode_pcm(audio, fmt)
        arrived: list[tuple[str, int]] = []
        done: dict[str, SessionTranscribed] = {}

        async def on_transcript(msg):
            t = codec.decode(msg.data, Transcript)
            arrived.append((t.session, t.utterance))

        async def on_done(msg):
            event = codec.decode(msg.data, SessionTranscribed)
            done[event.session] = event
        await bus.nc.subscribe(s.all_transcripts(), cb=on_transcript)
        await bus.nc.subscribe(s.all_control("transcribed"), cb=on_done)

        procs = [await _start_stt(nats_server.url)]
        try:
            # The single-process run of the same audio: one process holds every partition.
            await _all_bound(bus)
            await SessionPublisher(bus, "reference").publish_pcm(pcm, fmt)
            await until(lambda: "reference" in done, 120, "the reference session")
            reference = await _transcripts(bus, "reference")
            assert len(reference) == len(SENTENCES), [t.text for t in reference]

            procs += [await _start_stt(nats_server.url) for _ in range(2)]
            await asyncio.sleep(3.0)  # a beat: the first gives up what the others take
            await _all_bound(bus)
            held = {int(i["metadata"]["pid"]): i["endpoints"][0]["data"]["partitions"]
                    for i in await micro_instances(bus.nc, s.service_name("stt"))}
            assert sorted(held) == sorted(p.pid for p in procs), held
            assert sorted(p for share in held.values() for p in share) == list(range(PARTITIONS)), held
            victim = next(p for p in procs if p.pid == max(held, key=lambda pid: len(held[pid])))

            sessions = [f"shared-{i}" for i in range(9)]
            theirs = [sid for sid in sessions if fnv1a32(sid) % PARTITIONS in held[victim.pid]]
            assert theirs, (held, victim.pid)
            publishing = [asyncio.create_task(SessionPublisher(bus, sid, realtime=True).publish_pcm(pcm, fmt))
                          for sid in sessions]
            started = time.monotonic()
            await until(lambda: any(sid in theirs for sid, _ in arrived), 60, "a transcript of the victim's sessions")
            os.kill(victim.pid, signal.SIGKILL)  # mid-run: the sessions it holds are half done
            await victim.wait()
            killed_at = time.monotonic() - started
            await asyncio.gather(*publishing)
            await until(lambda: set(sessions) <= done.keys(), 180, "every session to be transcribed")
        finally:
            for p in procs:
                if p.returncode is None:
                    p.terminate()
                    await p.wait()

        assert killed_at < len(audio) / rate, "the kill came after the sessions had been sent"
        work = await bus.js.stream_info(s.stt_work_stream(), subjects_filter=">")
        partition_of = {s.session_from(subject): s.stt_work_kind(subject)[1] for subject in work.state.subjects}
        assert all(partition_of[sid] == fnv1a32(sid) % PARTITIONS for sid in sessions)  # NATS's partition()
        for sid in sessions:
            kept = await _transcripts(bus, sid)
            assert [t.utterance for t in kept] == list(range(len(reference))), (sid, [(t.utterance, t.text) for t in kept])
            assert sorted(u for x, u in arrived if x == sid) == list(range(len(reference))), sid  # each came once
            for ref, t in zip(reference, kept):
                assert wer(ref.text, t.text) <= 0.3 and abs(ref.start - t.start) < 0.3 and abs(ref.end - t.end) < 0.3, (
                    sid, ref, t)
            assert all(a.last_seq < b.first_seq for a, b in zip(kept, kept[1:]))  # no audio transcribed twice
            assert done[sid].utterances == len(reference) and done[sid].frames_missing == 0, done[sid]
            errors = [codec.decode(m.data, SessionError) async for m in stored(bus.js, s.stream("ctl"), s.control(sid, "error"))]
            assert not errors, (sid, errors)
            frames = [codec.decode_meta(m.headers, AudioFrame).seq async for m in stored(bus.js, s.stream("audio"), s.audio_in(sid))]
            assert frames == list(range(len(frames)))  # AUDIO keeps the session as sent: replay is unchanged
