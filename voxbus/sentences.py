"""Cutting streamed text into pieces worth speaking: whole sentences, and for the first piece of
a reply an earlier clause boundary, so the first audio comes out sooner."""

from __future__ import annotations

import re

from sentencex import segment

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def speakable(text: str) -> str:
    """Text as the TTS service sends it to be spoken: control characters (which the manager
    refuses: a NUL crashed the phonemizer) become spaces, so one stray byte in an LLM's reply or a
    say request does not cost its whole sentence."""
    return _CONTROL.sub(" ", text)


_CLAUSE = re.compile(r"[,;:](?=\s)")


class SentenceSplitter:
    """Streamed text in, whole sentences out, as soon as each is known to be complete.

    Sentence boundaries come from sentencex (abbreviations such as "Dr." or "e.g." and numbers
    such as "3.5" do not end a sentence). A sentence is complete once the text after it has begun
    the next one, once whitespace follows it where a next sentence could begin, or at a line
    break; the rest waits for more text or flush(). The first piece of a reply may end at an
    earlier clause boundary, or with `first_words`, after that many words when neither a
    sentence nor a clause has ended by then, so the first audio comes out sooner.
    """

    def __init__(self, first_clause_words: int = 4, language: str = "en", first_words: int = 0) -> None:
        self.buffer = ""
        self.first_clause_words = first_clause_words  # 0: never cut the first piece at a clause
        self.first_words = first_words  # >0: the first piece ends after this many words at the latest
        self.language = language
        self.emitted = 0

    def feed(self, text: str) -> list[str]:
        self.buffer += text
        out = []
        while (piece := self._next()) is not None:
            if piece.strip():
                out.append(piece.strip())
                self.emitted += 1
        return out

    def flush(self) -> list[str]:
        rest, self.buffer = self.buffer.strip(), ""
        if rest:
            self.emitted += 1
            return [rest]
        return []

    def _next(self) -> str | None:
        if self.emitted == 0 and self.first_clause_words:
            c = _CLAUSE.search(self.buffer)
            if c and len(self.buffer[: c.end()].split()) >= self.first_clause_words:
                first = self._sentence()
                if first is None or c.end() < len(first):
                    return self._take(c.end())
        head, sep, _ = self.buffer.partition("\n")
        if sep and head.strip():  # a line break always ends a piece
            return self._take(len(head) + 1)
        sentence = self._sentence()
        if sentence is None and self.emitted == 0 and self.first_words:
            words = re.match(r"\s*(?:\S+\s+){%d}" % self.first_words, self.buffer)  # that many, each complete
            if words:
                return self._take(words.end())
        return None if sentence is None else self._take(len(sentence))

    def _sentence(self) -> str | None:
        """The buffer's first sentence, once it is known to be complete: text of a next one
        follows it, or the buffer ends in whitespace where a next sentence could begin (a
        sentence's own trailing space, as the assistant sends each one: "Dr. " is no such place)."""
        parts = list(segment(self.language, self.buffer))
        if len(parts) >= 2 and parts[1].strip():
            return parts[0]
        if self.buffer.strip() and self.buffer[-1:].isspace():
            probe = list(segment(self.language, self.buffer + "X"))  # a neutral next word
            if len(probe) >= 2 and probe[0] == self.buffer:
                return self.buffer
        return None

    def _take(self, n: int) -> str:
        piece, self.buffer = self.buffer[:n], self.buffer[n:]
        return piece
