"""Turning per-window speech probabilities into utterances: pure logic, no I/O.

Positions are sample indexes of one session's 16 kHz stream. The cutter opens an utterance at
the first speech window, closes it after `min_silence` of silence (or cuts it at its quietest
recent window once it reaches `max_utterance`), drops bursts shorter than `min_speech`, and
pads each utterance with some pre- and post-roll so first and last words are not clipped.
When the open utterance's text, as it would end now, reads as a finished sentence (the STT says
so through `hint_complete`), a shorter `complete_silence` already closes it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NEG_MARGIN = 0.15
"""Speech ends below threshold - margin: hysteresis, so a word's soft tail does not split it."""
QUIET_LOOKBACK_S = 1.0
"""A forced cut looks this far back for the quietest window, so it rarely lands mid-word."""


@dataclass(frozen=True)
class CutterSettings:
    threshold: float = 0.5
    min_silence_s: float = 0.4
    min_speech_s: float = 0.25
    max_utterance_s: float = 15.0
    pre_roll_s: float = 0.2
    post_roll_s: float = 0.15
    complete_silence_s: float | None = None  # None: min_silence_s (no shorter pause for a finished sentence)
    rate: int = 16000
    window: int = 512

    @classmethod
    def from_config(cls, st) -> "CutterSettings":
        """From the `stt` section of the config (SttConfig)."""
        return cls(threshold=st.vad_threshold, min_silence_s=float(st.min_silence), min_speech_s=float(st.min_speech),
                   max_utterance_s=float(st.max_utterance), pre_roll_s=float(st.pre_roll),
                   post_roll_s=float(st.post_roll),
                   complete_silence_s=max(float(st.complete_silence), float(st.post_roll)) if st.early_final else None)


@dataclass(frozen=True)
class Cut:
    start: int
    end: int


class UtteranceCutter:
    def __init__(self, settings: CutterSettings) -> None:
        self.s = settings
        r = settings.rate
        self.min_silence = round(settings.min_silence_s * r)
        self.min_speech = round(settings.min_speech_s * r)
        self.max_len = round(settings.max_utterance_s * r)
        self.pre_roll = round(settings.pre_roll_s * r)
        self.post_roll = round(settings.post_roll_s * r)
        early = settings.complete_silence_s
        self.complete_silence = self.min_silence if early is None else min(round(early * r), self.min_silence)
        self.complete_end: int | None = None  # the end at which the open utterance reads as finished
        self.neg_threshold = max(settings.threshold - NEG_MARGIN, 0.01)
        self.pos = 0  # end of the last window seen
        self.prev_end = 0  # end of the last emitted (or dropped) utterance: cuts never overlap
        self.start: int | None = None  # start of the open utterance, pre-roll included
        self.last_speech_end = 0
        self.silence = 0
        self.speech = 0
        self.recent: list[tuple[int, float]] = []  # (window start, prob) of the open utterance's last second

    @property
    def open(self) -> bool:
        return self.start is not None

    def safe_position(self) -> int:
        """Samples before this position will never be part of a future cut."""
        if self.start is not None:
            return self.start
        return max(self.prev_end, self.pos - self.pre_roll, 0)

    def push(self, probs: np.ndarray, first_window_start: int) -> list[Cut]:
        cuts: list[Cut] = []
        if self.start is not None and self.silence >= self._silence_needed():  # a hint came between pushes
            cuts += self._close(min(self.last_speech_end + self.post_roll, self.pos))
        w = self.s.window
        for i, p in enumerate(probs.tolist()):
            ws = first_window_start + i * w
            we = ws + w
            self.pos = we
            if self.start is None:
                if p >= self.s.threshold:
                    self._open(ws, max(self.prev_end, ws - self.pre_roll))
                continue
            self.recent.append((ws, p))
            if len(self.recent) * w > QUIET_LOOKBACK_S * self.s.rate:
                self.recent.pop(0)
            if p >= self.s.threshold:
                self.last_speech_end = we
                self.silence = 0
                self.speech += w
            elif p < self.neg_threshold:
                self.silence += w
            if self.silence >= self._silence_needed():
                cuts += self._close(min(self.last_speech_end + self.post_roll, we))
            elif we - self.start >= self.max_len:
                if self.silence:  # already in the pause after the speech: end it there
                    cuts += self._close(min(self.last_speech_end + self.post_roll, we))
                else:
                    cuts += self._force_cut(we)
        return cuts

    def would_end(self) -> Cut | None:
        """The cut closing the open utterance would make now, once the speaker has paused for the
        post-roll (the audio of its final, if it ends in this pause); else None."""
        if self.start is None or not self.silence or self.speech < self.min_speech:
            return None
        end = self.last_speech_end + self.post_roll
        return Cut(self.start, end) if self.pos >= end else None

    def hint_complete(self, cut: Cut) -> None:
        """The open utterance, ending as `cut`, reads as a finished sentence."""
        if self.start == cut.start:
            self.complete_end = cut.end

    def _silence_needed(self) -> int:
        if self.complete_end is not None and self.complete_end == self.last_speech_end + self.post_roll:
            return self.complete_silence  # (speech since the hint moved last_speech_end: void)
        return self.min_silence

    def finish(self) -> list[Cut]:
        """End of the session: close whatever is open at the last position seen."""
        if self.start is None:
            return []
        return self._close(min(self.last_speech_end + self.post_roll, self.pos))

    def _open(self, speech_start: int, start: int) -> None:
        self.start = start
        self.last_speech_end = speech_start + self.s.window
        self.silence = 0
        self.speech = self.s.window
        self.recent = []
        self.complete_end = None

    def _close(self, end: int) -> list[Cut]:
        assert self.start is not None
        cut = Cut(self.start, end) if self.speech >= self.min_speech else None
        self.prev_end = max(self.prev_end, end)
        self.start = None
        self.recent = []
        self.complete_end = None
        return [cut] if cut else []

    def _force_cut(self, now: int) -> list[Cut]:
        """Max length reached mid-speech: cut at the quietest recent window, keep the rest open."""
        assert self.start is not None
        at, _ = min(self.recent, key=lambda wp: wp[1]) if self.recent else (now, 0.0)
        at = max(at, self.start + self.s.window)
        cut = Cut(self.start, at)
        tail = [(ws, p) for ws, p in self.recent if ws >= at]
        self.prev_end = at
        self.start = at
        self.speech = sum(self.s.window for _, p in tail if p >= self.s.threshold)
        self.silence = 0
        self.recent = tail
        self.complete_end = None
        return [cut]
