"""`voxbus transcribe`'s work: publish each file as its own session, concurrently, and collect
every transcript until the STT service says each session is complete."""

from __future__ import annotations

import asyncio
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from nats.aio.msg import Msg

from voxbus.bus import Bus
from voxbus.history import stored
from voxbus.ingest import SessionPublisher, read_audio
from voxbus.messages import codec
from voxbus.messages.audio import AudioFormat
from voxbus.messages.control import SessionError, SessionTranscribed
from voxbus.messages.text import Transcript
from voxbus.timecodes import srt_time, vtt_time


@dataclass
class FileJob:
    path: Path
    session: str
    pcm: bytes
    format: AudioFormat
    duration: float
    published_s: float = 0.0
    transcripts: dict[int, Transcript] = field(default_factory=dict)
    errors: list[SessionError] = field(default_factory=list)
    expected: int | None = None  # utterance count from the `transcribed` event
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def transcribed_s(self) -> float:
        """How far into the file the transcripts have got (for progress)."""
        if self.done.is_set():
            return self.duration
        return max((t.end for t in self.transcripts.values()), default=0.0)

    @property
    def text(self) -> str:
        return " ".join(t.text for t in self.ordered() if t.text)

    def ordered(self) -> list[Transcript]:
        return [self.transcripts[k] for k in sorted(self.transcripts)]


def session_id_for(path: Path) -> str:
    stem = re.sub(r"[^A-Za-z0-9_\-]+", "-", path.stem).strip("-")[:48] or "audio"
    return f"{stem}-{uuid.uuid4().hex[:8]}"


def load_jobs(paths: list[str]) -> list[FileJob]:
    """Decode every file first, so a bad one fails the command before anything is published."""
    jobs = []
    for p in paths:
        pcm, fmt = read_audio(p)
        jobs.append(FileJob(Path(p), session_id_for(Path(p)), pcm, fmt, fmt.duration(len(pcm))))
    return jobs


async def transcribe_jobs(bus: Bus, jobs: list[FileJob], *, realtime: bool = False,
                          on_progress: Callable[[], None] | None = None,
                          on_transcript: Callable[[FileJob, Transcript], None] | None = None) -> list[FileJob]:
    """Publish each job as a session and wait for all its transcripts; `on_transcript(job, t)` is
    told of each as it comes (the HTTP gateway streams them)."""
    by_session = {j.session: j for j in jobs}
    subjects = bus.subjects

    def job_of(msg: Msg) -> FileJob | None:
        return by_session.get(subjects.session_from(msg.subject))

    async def on_transcript_msg(msg: Msg) -> None:
        if (job := job_of(msg)) is not None:
            t = codec.decode(msg.data, Transcript)
            job.transcripts[t.utterance] = t
            if on_transcript:
                on_transcript(job, t)
            if on_progress:
                on_progress()

    async def on_error(msg: Msg) -> None:
        if (job := job_of(msg)) is not None:
            job.errors.append(codec.decode(msg.data, SessionError))

    async def on_done(msg: Msg) -> None:
        if (job := job_of(msg)) is not None:
            job.expected = codec.decode(msg.data, SessionTranscribed).utterances
            job.done.set()

    # Subscribe before publishing; anything missed live (a reconnect) is read back from the stream.
    # A few sessions (a gateway's one upload) subscribe to their own subjects, many to wildcards.
    if len(jobs) <= 4:
        subs = [await bus.nc.subscribe(subject, cb=cb) for j in jobs for subject, cb in (
            (subjects.transcript(j.session), on_transcript_msg), (subjects.control(j.session, "error"), on_error),
            (subjects.control(j.session, "transcribed"), on_done))]
    else:
        subs = [await bus.nc.subscribe(subjects.all_transcripts(), cb=on_transcript_msg),
                await bus.nc.subscribe(subjects.all_control("error"), cb=on_error),
                await bus.nc.subscribe(subjects.all_control("transcribed"), cb=on_done)]
    try:
        async def publish(job: FileJob) -> None:
            def progress(_frames: int, seconds: float) -> None:
                job.published_s = seconds
            pub = SessionPublisher(bus, job.session, realtime=realtime, meta={"file": job.path.name}, on_frame=progress,
                                   partials=False)  # (it prints finals only: no interim decodes for it)
            await pub.publish_pcm(job.pcm, job.format)
            job.pcm = b""  # stored in the stream now; free the memory
            if on_progress:
                on_progress()

        await asyncio.gather(*(publish(j) for j in jobs))
        await asyncio.gather(*(j.done.wait() for j in jobs))
        for job in jobs:
            if job.expected is not None and len(job.transcripts) < job.expected:
                async for msg in stored(bus.js, subjects.stream("text"), subjects.transcript(job.session)):
                    t = codec.decode(msg.data, Transcript)
                    job.transcripts[t.utterance] = t
    finally:
        for sub in subs:
            await sub.unsubscribe()
    return jobs


def cues(job: FileJob, words: bool = False) -> list[tuple[float, float, str]]:
    """(start, end, text) per transcript, or per word of each (`words`)."""
    if words:
        return [(w.start, max(w.end, w.start), w.word) for t in job.ordered() for w in t.words if w.word]
    return [(t.start, t.end, t.text) for t in job.ordered() if t.text]


def to_srt(job: FileJob, words: bool = False) -> str:
    blocks = [f"{i}\n{srt_time(a)} --> {srt_time(b)}\n{text}\n" for i, (a, b, text) in enumerate(cues(job, words), 1)]
    return "\n".join(blocks)


def to_vtt(job: FileJob, words: bool = False) -> str:
    return "WEBVTT\n\n" + "\n".join(f"{vtt_time(a)} --> {vtt_time(b)}\n{text}\n" for a, b, text in cues(job, words))

