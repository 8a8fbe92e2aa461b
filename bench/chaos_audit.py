"""After the chaos run: what each session lost or duplicated, and whether somebody was told.

For every session, read back from the streams:
- frames: the numbers stored against the numbers sent (a frame stored twice is a duplicate; one
  never stored is a loss, reported when the publisher said so or the STT's `transcribed` event
  counts it in `frames_missing`);
- transcripts: each utterance of the same audio transcribed without faults (the baseline session)
  must be covered by a transcript of the chaos session (by frame range: each utterance's
  `first_seq..last_seq`); two transcripts over the same frames are a duplicate, and so is a second
  `transcribed` event. An uncovered utterance is a reported loss when the session has an error
  event or reported missing frames, else a silent one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from voxbus.bus import Bus
from voxbus.history import stored
from voxbus.messages import AudioFrame, SessionError, SessionTranscribed, Transcript, codec

NOT_STORED = re.compile(r"(\d+) of (\d+) frames could not be stored")


@dataclass
class Published:
    """What one publisher was asked to send, and how it ended."""

    sid: str
    frames: int
    returncode: int | None = None
    stderr: str = ""

    @property
    def reported_lost(self) -> int:
        m = NOT_STORED.search(self.stderr)
        return int(m.group(1)) if m else 0


@dataclass
class SessionAudit:
    sid: str
    sent: int
    stored: int = 0
    frames_duplicated: int = 0
    frames_lost: int = 0
    frames_reported: int = 0
    utterances: int = 0
    baseline_utterances: int = 0
    utterances_lost: int = 0
    utterances_duplicated: int = 0
    transcribed_events: int = 0
    errors: list[str] = field(default_factory=list)
    publisher: str = "ok"

    @property
    def lost_silently(self) -> int:
        frames = max(0, self.frames_lost - self.frames_reported)
        told = bool(self.errors) or self.frames_reported > 0
        utterances = 0 if told else self.utterances_lost
        unfinished = 1 if self.transcribed_events == 0 and not told else 0
        return frames + utterances + unfinished

    @property
    def duplicated(self) -> int:
        return self.frames_duplicated + self.utterances_duplicated + max(0, self.transcribed_events - 1)


async def transcripts_of(bus: Bus, sid: str) -> list[Transcript]:
    s = bus.subjects
    return [codec.decode(m.data, Transcript) async for m in stored(bus.js, s.stream("text"), s.transcript(sid))]


def _overlap(a: Transcript, b: Transcript) -> int:
    return max(0, min(a.last_seq, b.last_seq) - max(a.first_seq, b.first_seq) + 1)


def _span(t: Transcript) -> int:
    return t.last_seq - t.first_seq + 1


def compare_utterances(texts: list[Transcript], baseline: list[Transcript]) -> tuple[int, int]:
    """(baseline utterances no transcript covers by half, transcripts repeating an index or frames
    another transcript already covered by more than half)."""
    indexes = [t.utterance for t in texts]
    duplicated = len(indexes) - len(set(indexes))
    for i, t in enumerate(texts):
        duplicated += sum(1 for u in texts[i + 1:] if _overlap(t, u) * 2 > min(_span(t), _span(u)))
    lost = sum(1 for b in baseline if sum(_overlap(b, t) for t in texts) * 2 < _span(b))
    return lost, duplicated


async def audit(bus: Bus, pub: Published, baseline: list[Transcript]) -> SessionAudit:
    s, sid = bus.subjects, pub.sid
    a = SessionAudit(sid=sid, sent=pub.frames, baseline_utterances=len(baseline))
    seqs = [codec.decode_meta(m.headers, AudioFrame).seq
            async for m in stored(bus.js, s.stream("audio"), s.audio_in(sid))]
    a.stored = len(set(seqs))
    a.frames_duplicated = len(seqs) - len(set(seqs))
    a.frames_lost = len(set(range(pub.frames)) - set(seqs))
    done = [codec.decode(m.data, SessionTranscribed)
            async for m in stored(bus.js, s.stream("ctl"), s.control(sid, "transcribed"))]
    a.transcribed_events = len(done)
    a.errors = [f"{e.code}: {e.message}" async for e in _errors(bus, sid)]
    a.frames_reported = max([pub.reported_lost] + [d.frames_missing for d in done])
    if pub.returncode != 0:
        a.publisher = f"exit {pub.returncode}: {pub.stderr.strip().splitlines()[-1] if pub.stderr.strip() else ''}"
    texts = await transcripts_of(bus, sid)
    a.utterances = len(texts)
    a.utterances_lost, a.utterances_duplicated = compare_utterances(texts, baseline)
    return a


async def _errors(bus: Bus, sid: str):
    s = bus.subjects
    async for m in stored(bus.js, s.stream("ctl"), s.control(sid, "error")):
        yield codec.decode(m.data, SessionError)


def table(audits: list[SessionAudit]) -> str:
    head = (f"{'session':<14}{'sent':>7}{'stored':>7}{'lost':>6}{'told':>6}{'dup':>5}{'utts':>6}"
            f"{'base':>6}{'u.lost':>7}{'u.dup':>6}{'done':>5}{'silent':>7}  publisher / errors")
    rows = [head, "-" * len(head)]
    for a in audits:
        notes = [a.publisher] + [e[:70] for e in a.errors[:3]] + ([f"(+{len(a.errors) - 3} more)"] if len(a.errors) > 3 else [])
        rows.append(f"{a.sid:<14}{a.sent:>7}{a.stored:>7}{a.frames_lost:>6}{a.frames_reported:>6}{a.duplicated:>5}"
                    f"{a.utterances:>6}{a.baseline_utterances:>6}{a.utterances_lost:>7}{a.utterances_duplicated:>6}"
                    f"{a.transcribed_events:>5}{a.lost_silently:>7}  {' | '.join(notes)}")
    return "\n".join(rows)
