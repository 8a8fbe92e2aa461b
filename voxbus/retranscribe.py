"""Re-transcribing a stored session (`voxbus replay SESSION --retranscribe`): its stored audio
runs again, at full speed, through the STT's own pieces (the same normalisation, Silero VAD and
utterance cutter as `voxbus stt`, session.py) with the settings of the given config, and each
utterance is transcribed through the manager by the given model. The result is compared with
what was stored: a word diff and the WER between them (case and punctuation ignored). This makes
a model upgrade or a VAD change a measured regression test on real traffic.

Nothing is published: the live services, and the session's stored history, are untouched.
"""

from __future__ import annotations

import asyncio
import difflib
import time
from dataclasses import dataclass, field

from voxbus.bus import Bus
import stamina

from voxbus.client import ModelClient
from voxbus.config.schema import SttConfig
from voxbus.errors import ModelError
from voxbus.history import stored
from voxbus.messages import codec
from voxbus.messages.control import SessionTranscribed
from voxbus.replay import Window, load_session
from voxbus.stt.agreement import norm
from voxbus.stt.cutter import CutterSettings
from voxbus.stt.session import GROUP, SessionState
from voxbus.stt.transcripts import MODEL_FORMAT
from voxbus.stt.vad import SileroVad

CONCURRENT = 8
"""Utterances asked for at once (a batch's worth)."""


@dataclass
class Utterance:
    start: float
    end: float
    text: str


@dataclass
class Comparison:
    session: str
    stored: list[Utterance]
    new: list[Utterance]
    model: str
    wer: float = 0.0
    diff: list[tuple[str, str]] = field(default_factory=list)  # ("=", word) ("-", stored) ("+", new)

    @property
    def changed(self) -> bool:
        return any(op != "=" for op, _ in self.diff)

    def as_json(self) -> dict:
        return {"session": self.session, "model": self.model, "wer": round(self.wer, 4), "changed": self.changed,
                "stored": [u.__dict__ for u in self.stored], "new": [u.__dict__ for u in self.new],
                "diff": [{"op": op, "word": w} for op, w in self.diff]}


def words(text: str) -> list[str]:
    return [w for w in (norm(x) for x in text.split()) if w]


def word_diff(old: str, new: str) -> tuple[list[tuple[str, str]], float]:
    """(the diff, word error rate of `new` against `old`): substitutions, deletions and
    insertions over the stored words, as jiwer counts them."""
    a, b = words(old), words(new)
    out: list[tuple[str, str]] = []
    errors = 0
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if tag == "equal":
            out += [("=", w) for w in a[i1:i2]]
            continue
        out += [("-", w) for w in a[i1:i2]] + [("+", w) for w in b[j1:j2]]
        errors += max(i2 - i1, j2 - j1)
    return out, (errors / len(a) if a else float(bool(b)))


async def retranscribe(bus: Bus, session: str, stt: SttConfig, model: str | None = None) -> Comparison:
    rec = await load_session(bus, session, Window())
    frames = sorted((e for e in rec.events if e.kind == "audio"), key=lambda e: e.body.seq)
    if not frames:
        raise LookupError(f"nothing stored for session {session}")
    old = [Utterance(e.body.start, e.body.end, e.body.text) for e in rec.events if e.kind == "transcript"]
    cuts = await asyncio.to_thread(cut, session, frames, CutterSettings.from_config(stt))
    model_id = model or stt.model or bus.config.manager.defaults["stt"]
    client = ModelClient.from_bus(bus)
    room = asyncio.Semaphore(CONCURRENT)

    async def one(u):
        async with room:  # (a long session must not flood the model's queue: `overloaded`)
            async for attempt in stamina.retry_context(on=lambda e: isinstance(e, ModelError) and e.transient,
                                                       attempts=5, wait_initial=0.5, wait_max=5.0):
                with attempt:
                    return await client.transcribe(u.audio.tobytes(), MODEL_FORMAT, model=model_id,
                                                   language=stt.language, words=stt.words, session=session)

    replies = await asyncio.gather(*(one(u) for u in cuts))
    new = [Utterance(u.t_start, u.t_end, r.text) for u, r in zip(cuts, replies)]
    diff, wer = word_diff(" ".join(u.text for u in old), " ".join(u.text for u in new))
    return Comparison(session, old, new, model_id, wer, diff)


def cut(session: str, frames: list, settings: CutterSettings) -> list:
    """The session's utterances as the STT service would cut them with `settings`."""
    vad = SileroVad()
    s = SessionState(session, vad.stream(), settings)
    for e in frames:
        if e.payload:
            s.feed(e.payload, e.body.format, e.body.seq, e.body.offset, None)
    position, audio = s.vad_input(final=True)
    cuts = []
    for i in range(0, len(audio), GROUP):  # group by group, as a live session's passes run it
        cuts += s.apply(position + i, s.vad.probabilities(audio[i:i + GROUP]))
    cuts += s.cutter.finish()
    return s.to_utterances(cuts)


async def transcribed_since(bus: Bus, since: float) -> list[str]:
    """Sessions whose `transcribed` event was stored after `since` (Unix time), oldest first."""
    s = bus.subjects
    out: list[str] = []
    async for msg in stored(bus.js, s.stream("ctl"), s.all_control("transcribed")):
        ev = codec.decode(msg.data, SessionTranscribed)
        if (ev.ts or time.time()) >= since and ev.session not in out:
            out.append(ev.session)
    return out
