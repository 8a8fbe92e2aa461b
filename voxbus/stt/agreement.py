"""Which leading words of an open utterance's interim hypotheses are stable: pure logic, no I/O.

The rule is whisper_streaming's local agreement (LocalAgreement-2): a word is stable once two
hypotheses in a row, each decoded from all of the utterance heard so far, agree on it and on
every word before it. Stable words are then kept as they were first written: a later hypothesis
that changes its mind about one does not take it back, so a client can print them for good. The
last word of a hypothesis is never stable (its audio may stop mid-word). Words compare without
case and punctuation ("Paris," agrees with "paris").
"""

from __future__ import annotations

import re

_NOT_WORD = re.compile(r"[^\w']+")

ENDS_SENTENCE = re.compile(r"[?!][\"')\]]*$")
"""A hypothesis whose last word ends in ? or ! reads as a finished sentence (a question, the
common turn of a voice assistant)... A period does not: Whisper writes one at any pause, and a
comma's pause in "behind her house, where she grows" came out as "behind her house." ..."""
OPEN_ENDINGS = frozenset(
    "a an the and or but so of to in on at for with from by as into about than that which who whose "
    "my your our their his her its is are was were be been am do does did have has had can could "
    "will would should shall may might must if because while when where whether not very".split())
"""...unless its last word is one no English sentence ends with ("the capital of?" is a pause)."""


def norm(word: str) -> str:
    return _NOT_WORD.sub("", word.lower())


def reads_complete(text: str) -> bool:
    """Whether `text` reads as a finished sentence (for endpointing: a shorter pause ends it)."""
    words = text.split()
    if not words or text.rstrip().endswith("..."):
        return False
    return bool(ENDS_SENTENCE.search(words[-1])) and norm(words[-1]) not in OPEN_ENDINGS


class LocalAgreement:
    """One open utterance's hypotheses in, (text, stable prefix) out."""

    def __init__(self) -> None:
        self.stable: list[str] = []  # committed words, as first written
        self.previous: list[str] = []  # the last hypothesis's words

    def update(self, hypothesis: str) -> tuple[str, str]:
        """(the text to show, its stable prefix): the stable words, then the rest of this hypothesis."""
        words = hypothesis.split()
        n = len(self.stable)
        follows = [norm(w) for w in words[:n]] == [norm(w) for w in self.stable]
        if follows:
            agreed = n
            limit = min(len(words) - 1, len(self.previous))
            while agreed < limit and norm(words[agreed]) == norm(self.previous[agreed]) and norm(words[agreed]):
                agreed += 1
            self.stable += words[n:agreed]
            shown = self.stable + words[len(self.stable):]
        else:  # it disagrees with committed words: keep them, and go on after its last one
            shown = self.stable + words[self._resume(words):]
        self.previous = shown
        return " ".join(shown), " ".join(self.stable)

    def _resume(self, words: list[str]) -> int:
        """Where a disagreeing hypothesis goes on after the committed words: after its nearest
        match of the last committed word, else at the same position."""
        n = len(self.stable)
        last = norm(self.stable[-1])
        near = sorted(range(len(words)), key=lambda j: abs(j + 1 - n))
        return next((j + 1 for j in near if norm(words[j]) == last and abs(j + 1 - n) <= 2), n)
