"""`voxbus demo`'s work: one spoken question through the whole voice loop, timed per stage.

The question is spoken by the Piper voice (through the ModelManager, like any client would get
audio), published as 20 ms frames to a new session, and then everything happens on the bus:
STT -> transcript -> assistant -> streamed reply -> TTS -> audio chunks. Times are measured here,
at the client, from the moment the last frame of the question was published."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from voxbus.client import ModelClient
from voxbus.ingest import SessionPublisher
from voxbus.messages import ReplyChunk, Transcript, codec
from voxbus.pipeline import Pipeline
from voxbus.tts.collect import SpeechCollector


@dataclass
class LoopResult:
    session: str
    transcript: str = ""
    reply: str = ""
    wav: Path | None = None
    audio_s: float = 0.0
    stages: dict[str, float] = field(default_factory=dict)  # stage -> seconds after the last frame


async def voice_turn(pipe: Pipeline, question: str, wav_out: Path | None, *, echo=None,
                     timeout: float = 300.0) -> LoopResult:
    bus = pipe.bus
    client = ModelClient.from_bus(bus)
    sid = f"demo-{uuid.uuid4().hex[:8]}"
    res = LoopResult(sid)
    pcm, meta = await client.synthesize(question)
    last_frame = [0.0]
    marks: dict[str, float] = {}
    reply_done = asyncio.Event()

    async def on_transcript(msg) -> None:
        t = codec.decode(msg.data, Transcript)
        marks.setdefault("transcript", time.monotonic())
        res.transcript = (res.transcript + " " + t.text).strip()
        if echo:
            echo(f"you said: {t.text}\nassistant: ")

    async def on_reply(msg) -> None:
        c = codec.decode(msg.data, ReplyChunk)
        if c.text:
            marks.setdefault("llm first token", time.monotonic())
            res.reply += c.text
            if echo:
                echo(c.text)
        if c.final:
            marks.setdefault("llm done", time.monotonic())
            reply_done.set()

    subs = [await bus.nc.subscribe(bus.subjects.transcript(sid), cb=on_transcript),
            await bus.nc.subscribe(bus.subjects.reply(sid), cb=on_reply)]
    try:
        async with SpeechCollector(bus, sid) as speech:
            pub = SessionPublisher(bus, sid, assistant=True,
                                   on_frame=lambda n, t: last_frame.__setitem__(0, time.monotonic()))
            await pub.publish_pcm(pcm, meta.format)
            turn = speech.turn(0)
            await asyncio.wait_for(asyncio.gather(turn.done.wait(), reply_done.wait()), timeout)
    finally:
        for sub in subs:
            await sub.unsubscribe()
    if echo:
        echo("\n")
    if turn.first_chunk_at:
        marks["first audio chunk"] = turn.first_chunk_at
    res.stages = {k: v - last_frame[0] for k, v in sorted(marks.items(), key=lambda kv: kv[1])}
    res.audio_s = turn.duration
    if wav_out is not None and turn.format is not None:
        res.wav = turn.write_wav(wav_out)
    return res


def echo_stdout(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()
