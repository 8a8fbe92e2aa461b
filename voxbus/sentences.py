"""Cutting streamed text into pieces worth speaking: whole sentences, and for the first piece of
a reply an earlier clause boundary, so the first audio comes out sooner."""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def speakable(text: str) -> str:
    """Text as the TTS service sends it to be spoken: control characters (which the manager
    refuses: a NUL crashed the phonemizer) become spaces, so one stray byte in an LLM's reply or a
    say request does not cost its whole sentence."""
    return _CONTROL.sub(" ", text)


_END = re.compile(r"[.!?]+[\"')\]]*(?=\s)|\n+")
_CLAUSE = re.compile(r"[,;:](?=\s)")


class SentenceSplitter:
    def __init__(self, first_clause_words: int = 4) -> None:
        self.buffer = ""
        self.first_clause_words = first_clause_words  # 0: never cut the first piece at a clause
        self.emitted = 0

    def feed(self, text: str) -> list[str]:
        self.buffer += text
        out = []
        while True:
            piece = self._next()
            if piece is None:
                return out
            if piece.strip():
                out.append(piece.strip())
                self.emitted += 1

    def flush(self) -> list[str]:
        rest, self.buffer = self.buffer.strip(), ""
        if rest:
            self.emitted += 1
            return [rest]
        return []

    def _next(self) -> str | None:
        m = _END.search(self.buffer)
        if self.emitted == 0 and self.first_clause_words:
            c = _CLAUSE.search(self.buffer)
            if c and (m is None or c.start() < m.start()) and len(self.buffer[: c.end()].split()) >= self.first_clause_words:
                m = c
        if m is None:
            return None
        piece, self.buffer = self.buffer[: m.end()], self.buffer[m.end():]
        return piece
