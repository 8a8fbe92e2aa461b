"""One session's state inside the STT service: its audio normalised to 16 kHz mono, its VAD
stream and utterance cutter, the frames it still holds unacknowledged, and the utterances
waiting to be transcribed.

Frames are acknowledged only once nothing needs them any more: silence that no future utterance
will include, or speech whose transcript is stored. That is what makes a crash lose nothing.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Callable

import numpy as np
import soxr

from voxbus.audio import pcm_to_float, to_mono
from voxbus.messages.audio import AudioFormat
from voxbus.stt.cutter import Cut, CutterSettings, UtteranceCutter
from voxbus.stt.vad import RATE, WINDOW, VadStream

GROUP = 4 * WINDOW
"""The VAD always runs on whole groups of 4 windows (128 ms), aligned to the session's start. A
batched ONNX call rounds slightly differently from single ones, so letting arrival timing decide
the grouping made speech probabilities, and so utterance edges, vary from run to run; fixed
groups make them a function of the audio alone (and amortise the per-call cost)."""


class Phase(IntEnum):
    """Where a session is in its life; it only moves forward, so phases compare in order."""

    OPEN = 0  # frames may still come
    ENDED = 1  # an end event arrived (or the session went idle); frames it names may still be due
    FLUSHED = 2  # every frame arrived and the last partial window went through the VAD
    FINISHING = 3  # the last transcript is stored; its `transcribed` event is being published
    DONE = 4  # the `transcribed` event is published: nothing of it is held any more


@dataclass
class HeldFrame:
    start: int  # 16 kHz sample position of the frame's first sample
    end: int
    seq: int
    msg: object  # the JetStream message to acknowledge
    touched: float  # monotonic time of delivery (or of the last in-progress ack)


@dataclass
class Utterance:
    start: int
    end: int
    first_seq: int
    last_seq: int
    audio: np.ndarray
    t_start: float  # session time, seconds
    t_end: float
    last_frame_at: float = field(default_factory=time.monotonic)
    """When the frame that closed the utterance arrived: the start of the added-latency clock."""


class SessionState:
    def __init__(self, sid: str, vad: VadStream, settings: CutterSettings) -> None:
        self.sid = sid
        self.vad = vad
        self.cutter = UtteranceCutter(settings)
        self.format: AudioFormat | None = None
        self.resampler: soxr.ResampleStream | None = None
        self.pos_in = 0.0  # input samples fed, scaled to 16 kHz (exact frame boundaries)
        self.chunks: deque[tuple[int, np.ndarray]] = deque()  # (start position, 16 kHz samples)
        self.buffered = 0  # resampled samples appended so far (= end of the last chunk)
        self.vad_pos = 0  # samples handed to the VAD
        self.held: deque[HeldFrame] = deque()
        self.pending: deque[Utterance] = deque()  # cut, not yet stored
        self.t0: float | None = None  # session time of position 0
        self.max_seq = -1  # highest frame seq seen (fed, skipped or rejected)
        self.fed_seq = -1  # highest frame seq fed to the VAD
        self.next_utterance = 0
        self.skip_through = -1  # frames up to this seq are covered by stored transcripts
        self.end_seq: int | None = None
        self.end_msg: object | None = None
        self.phase = Phase.OPEN
        self.transcribed_seq = -1  # last_seq of an earlier `transcribed` event of this session
        self.transcribed_at: float | None = None  # when the server stored that event (its clock, not ours)
        self.last_heard = time.monotonic()  # the last frame or end event: the idle clock
        self.errors = 0
        self.missing = 0  # frames this run reported missing (gaps, never-read starts, tails given up)
        self.gaps: list[tuple[int, int]] = []  # the ranges reported missing (the first MAX_GAPS_KEPT)
        self.duplicates: list[int] | None = None  # [first, last, stream seq] of copies not yet reported
        self.start_checked = False  # whether frames before the first one read were looked for
        self.start_pending = False  # they were not in the stream: wait for them as for a gap
        self.worker = None  # asyncio task transcribing `pending`
        self.early: dict[int, tuple[object, object]] = {}  # seq -> (msg, AudioFrame): come after a gap
        self.early_since: float | None = None  # when the oldest of them came (the reorder clock)
        self.last_fed: object | None = None  # the message of the frame fed last: a lost delivery is after it
        self.partition: int | None = None  # the STT work stream partition the session's frames come in
        self.released = False  # its partition moved to another process: this one publishes nothing more of it
        self.recovered: set[int] = set()  # stream seqs read from the stream for a lost delivery
        self.partials = None  # its interim transcripts' state (partials.py), once it has spoken

    # -- audio in -------------------------------------------------------------------------------
    def late_reason(self, seq: int, stored_at: Callable[[], float]) -> str:
        """Why frame `seq` belongs to no session any more ('' if it does). A session is transcribed
        once: audio sent after its end, or under its id once it was transcribed, is reported
        rather than silently dropped or turned into a second `transcribed`. A redelivery after a
        restart is neither: the server stored it (`stored_at()`) before the session's `transcribed`
        event (both times are the server's, so clocks of clients and services do not matter), and
        its seq is covered. (The storage time is asked for only for a transcribed session: parsing
        it costs a tenth of the intake's time per frame.)"""
        if self.transcribed_at is not None and (seq > self.transcribed_seq or stored_at() > self.transcribed_at):
            return (f"frame {seq} arrived after session {self.sid} was transcribed; "
                    f"a session id is used once: send new audio as a new session")
        if self.end_seq is not None and seq > self.end_seq:
            return f"frame {seq} comes after the session's end event (last_seq {self.end_seq})"
        if self.phase >= Phase.FLUSHED and seq > max(self.fed_seq, self.skip_through):
            why = ("without it, as its end event named it but it had not come within stt.session_idle"
                   if self.end_seq is not None else "after stt.session_idle with no frames")
            return f"frame {seq} arrived after session {self.sid} was finished {why}"
        return ""

    def feed(self, pcm: bytes, fmt: AudioFormat, seq: int, offset: float | None, msg: object) -> None:
        """Append one frame (already validated) and hold its message until it is settled."""
        samples = to_mono(pcm_to_float(pcm, fmt))
        if fmt != self.format:
            self._flush_resampler()
            self.format = fmt
            self.resampler = None if fmt.rate == RATE else soxr.ResampleStream(fmt.rate, RATE, 1, dtype="float32", quality="HQ")
        if self.t0 is None:
            duration = len(samples) / fmt.rate
            self.t0 = offset if offset is not None else seq * duration
        out = samples if self.resampler is None else self.resampler.resample_chunk(samples)
        self._append(out)
        start = int(self.pos_in)
        self.pos_in += len(samples) * RATE / fmt.rate
        self.held.append(HeldFrame(start, int(self.pos_in), seq, msg, time.monotonic()))
        self.fed_seq = max(self.fed_seq, seq)
        self.last_heard = time.monotonic()

    def fill_gap(self, seconds: float) -> None:
        """Silence where frames never arrived, so the audio after them keeps its session time
        (and the cutter sees a pause, not words joined across the hole)."""
        if self.format is None or seconds <= 0:
            return
        silence = np.zeros(int(round(seconds * self.format.rate)), dtype=np.float32)
        out = silence if self.resampler is None else self.resampler.resample_chunk(silence)
        self._append(out)
        self.pos_in += len(silence) * RATE / self.format.rate

    def skip(self, seq: int, seconds: float) -> None:
        """A frame refused for its audio: silence of its length in its place, so the frames after
        it keep their time and are not reported missing as well."""
        self.fill_gap(seconds)
        self.fed_seq = max(self.fed_seq, seq)

    def missing_seconds(self, seq: int, offset: float | None, frame_s: float) -> float:
        """How much audio the frames before `seq` (after the last one fed) would have held."""
        if offset is not None and self.t0 is not None:
            return max(0.0, offset - (self.t0 + self.pos_in / RATE))
        return (seq - self.fed_seq - 1) * frame_s

    def _append(self, out: np.ndarray) -> None:
        if len(out):
            self.chunks.append((self.buffered, np.asarray(out, dtype=np.float32)))
            self.buffered += len(out)

    def _flush_resampler(self) -> None:
        if self.resampler is not None:
            self._append(self.resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True))
            self.resampler = None

    def slice(self, start: int, end: int) -> np.ndarray:
        parts = []
        for s, c in reversed(self.chunks):  # what is asked for is almost always at the tail
            if s + len(c) <= start:
                break
            if s < end:
                parts.append(c[max(start - s, 0): max(end - s, 0)])
        if not parts:
            return np.zeros(0, dtype=np.float32)
        return parts[0].copy() if len(parts) == 1 else np.concatenate(parts[::-1])

    # -- speech detection -------------------------------------------------------------------------
    def vad_input(self, final: bool = False) -> tuple[int, np.ndarray]:
        """(position, samples) of every whole new VAD window; at the end, the padded last one too.
        The VAD itself runs in a worker thread on this copy, so session state never crosses threads."""
        if final:
            self._flush_resampler()
            tail = (self.buffered - self.vad_pos) % GROUP
            if tail:
                self._append(np.zeros(GROUP - tail, dtype=np.float32))
        n = (self.buffered - self.vad_pos) // GROUP * GROUP
        return self.vad_pos, self.slice(self.vad_pos, self.vad_pos + n)

    def apply(self, position: int, probs: np.ndarray, final: bool = False) -> list[Cut]:
        cuts = self.cutter.push(probs, position)
        self.vad_pos = position + len(probs) * WINDOW
        if final:
            cuts += self.cutter.finish()
        return cuts

    def to_utterances(self, cuts: list[Cut]) -> list[Utterance]:
        out = []
        for cut in cuts:
            inside = [f.seq for f in self.held if f.end > cut.start and f.start < cut.end]
            if not inside:  # every frame of it was already covered by a stored transcript
                continue
            t0 = self.t0 or 0.0
            out.append(Utterance(cut.start, cut.end, inside[0], inside[-1], self.slice(cut.start, cut.end),
                                 round(t0 + cut.start / RATE, 3), round(t0 + cut.end / RATE, 3)))
        return out

    # -- acknowledgement --------------------------------------------------------------------------
    def settled(self) -> list[HeldFrame]:
        """Pop the held frames nothing needs any more, and drop audio older than any of them."""
        floor = self.cutter.safe_position()
        if self.pending:
            floor = min(floor, self.pending[0].start)
        if self.phase is Phase.DONE:
            floor = 1 << 62
        out = []
        while self.held and self.held[0].end <= floor:
            out.append(self.held.popleft())
        keep_from = min(floor, self.vad_pos)
        while self.chunks and self.chunks[0][0] + len(self.chunks[0][1]) <= keep_from:
            self.chunks.popleft()
        return out

    def stale(self, older_than: float) -> list[HeldFrame]:
        """Held frames delivered before `older_than`: they need an in-progress ack to stay ours."""
        return [f for f in self.held if f.touched < older_than]

    def advance(self, phase: Phase) -> None:
        self.phase = max(self.phase, phase)

    @property
    def complete(self) -> bool:
        """Every frame up to the end event's last_seq has arrived."""
        return self.phase >= Phase.ENDED and not self.early and (self.end_seq is None or self.max_seq >= self.end_seq)
