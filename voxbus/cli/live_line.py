"""One terminal line rewritten in place: the interim text of the utterance being spoken, which
its final transcript then replaces for good (`voxbus listen`). Not a terminal: finals only."""

from __future__ import annotations

import shutil
from typing import TextIO

CLEAR = "\r\x1b[2K"
BRIGHT, DIM, PLAIN = "\x1b[1m", "\x1b[2m", "\x1b[0m"


class LiveLine:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self.showing: str | None = None  # the session whose interim text is on the line

    def interim(self, head: str, stable: str, rest: str, session: str) -> None:
        if not self.tty:
            return
        width = max(shutil.get_terminal_size((100, 24)).columns - 1, 20)
        room = width - len(head)
        text = (stable + rest)[-room:] if room > 0 else ""
        cut = max(len(stable + rest) - len(text), 0)  # characters of the text scrolled off the left
        stable_shown = stable[cut:] if cut < len(stable) else ""
        rest_shown = text[len(stable_shown):]
        self.out.write(f"{CLEAR}{head}{BRIGHT}{stable_shown}{PLAIN}{DIM}{rest_shown}{PLAIN}")
        self.out.flush()
        self.showing = session

    def final(self, text: str, session: str) -> None:
        if self.showing is not None:
            self.out.write(CLEAR)
            self.showing = None
        self.out.write(text + "\n")
        self.out.flush()

    def close(self) -> None:
        if self.showing is not None:
            self.out.write("\n")
            self.out.flush()
            self.showing = None
