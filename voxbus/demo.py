"""`voxbus demo`'s work: one spoken question through the whole voice loop, timed per stage.

The question is spoken by the Piper voice (through the ModelManager, like any client would get
audio), published as 20 ms frames to a new session, and then everything happens on the bus:
STT -> transcript -> assistant -> streamed reply -> TTS -> audio chunks. Times are measured here,
at the client, from the end of the question (see voice_turn)."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from voxbus.audio import frame_bytes, pcm_to_float, to_mono, voiced_span
from voxbus.client import ModelClient
from voxbus.ingest import SessionPublisher
from voxbus.messages import AudioFormat, PartialTranscript, ReplyChunk, Transcript, codec
from voxbus.pipeline import Pipeline
from voxbus.tts.collect import SpeechCollector, SpeechTurn


@dataclass
class LoopResult:
    session: str
    transcript: str = ""
    reply: str = ""
    wav: Path | None = None
    audio_s: float = 0.0
    stages: dict[str, float] = field(default_factory=dict)  # stage -> seconds after the end of speech
    speech: SpeechTurn | None = None  # the reply's audio


async def voice_turn(pipe: Pipeline, question: str, wav_out: Path | None, *, echo=None,
                     timeout: float = 300.0, live: bool = False) -> LoopResult:
    """One spoken question through the loop. Not `live`: its frames go out at once, then its end
    event, which closes the utterance at once; times count from its last frame. `live`: as a
    person meets it: the frames go out in real time and silence follows in real time, with no end
    event, so the STT's own endpointing ends the turn; times count from the end of the voiced
    speech (the last 10 ms above a tenth of the loudest)."""
    bus = pipe.bus
    client = ModelClient.from_bus(bus)
    sid = f"demo-{uuid.uuid4().hex[:8]}"
    res = LoopResult(sid)
    pcm, meta = await client.synthesize(question)
    clock = [0.0, 0.0]  # first frame, last frame (monotonic)
    marks: dict[str, float] = {}
    reply_done = asyncio.Event()

    async def on_partial(msg) -> None:
        marks.setdefault("first partial", time.monotonic())
        if codec.decode(msg.data, PartialTranscript).closing:
            marks.setdefault("early final", time.monotonic())

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

    def on_frame(n: int, _seconds: float) -> None:
        clock[1] = time.monotonic()
        clock[0] = clock[0] or clock[1]

    subs = [await bus.nc.subscribe(bus.subjects.partial(sid), cb=on_partial),
            await bus.nc.subscribe(bus.subjects.transcript(sid), cb=on_transcript),
            await bus.nc.subscribe(bus.subjects.reply(sid), cb=on_reply)]
    try:
        async with SpeechCollector(bus, sid) as speech:
            pub = SessionPublisher(bus, sid, assistant=True, realtime=live, on_frame=on_frame)
            turn = speech.turn(0)
            answered = asyncio.gather(turn.done.wait(), reply_done.wait())
            if live:
                await pub.send(pcm, meta.format)
                t0 = clock[0] + voiced_end(pcm, meta.format)
                silence = bytes(frame_bytes(meta.format, 100))
                deadline = time.monotonic() + timeout
                while not answered.done() and time.monotonic() < deadline:  # the listener stays quiet
                    await pub.send(silence, meta.format)
                await pub.end()
            else:
                await pub.publish_pcm(pcm, meta.format)
                t0 = clock[1]
            await asyncio.wait_for(answered, timeout)
    finally:
        for sub in subs:
            await sub.unsubscribe()
    if echo:
        echo("\n")
    if turn.first_chunk_at:
        marks["first audio chunk"] = turn.first_chunk_at
    res.stages = {k: v - t0 for k, v in sorted(marks.items(), key=lambda kv: kv[1])}
    res.audio_s = turn.duration
    res.speech = turn
    if wav_out is not None and turn.format is not None:
        res.wav = turn.write_wav(wav_out)
    return res


def voiced_end(pcm: bytes, fmt: AudioFormat) -> float:
    """Seconds from the audio's start to the end of its last voiced 10 ms."""
    return voiced_span(to_mono(pcm_to_float(pcm, fmt)), fmt.rate)[1]


def echo_stdout(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()
