"""Terminal output of the CLI, all through rich: tables, progress bars and spinners.

Piped output stays plain text (rich drops styling when not on a terminal) and one line per table
row: rich would otherwise fit tables to 80 columns, wrapping rows that scripts split on spaces.
"""

from __future__ import annotations

from collections.abc import Iterable

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

PIPED_WIDTH = 400


def console(stderr: bool = False) -> Console:
    probe = Console(stderr=stderr)
    return probe if probe.is_terminal else Console(stderr=stderr, width=PIPED_WIDTH, highlight=False)


def table(columns: Iterable[str], right: Iterable[str] = ()) -> Table:
    """A borderless table whose cells never wrap; columns named in `right` are right-aligned."""
    right = set(right)
    out = Table(box=None, pad_edge=False, show_edge=False, header_style="bold", highlight=False)
    for name in columns:
        out.add_column(name, no_wrap=True, justify="right" if name in right else "left")
    return out


def add_row(out: Table, *cells: str, style: str | None = None) -> None:
    """A row of literal text: brackets in a model id or an error message are not rich markup."""
    out.add_row(*(Text(c) for c in cells), style=style)


def audio_progress(enabled: bool) -> Progress:
    """A bar over seconds of audio, with a phase word and an utterance count (`phase` and
    `utterances` task fields); drawn on stderr, and not at all when `enabled` is false."""
    return Progress(TextColumn("{task.description:<12}"), BarColumn(), TaskProgressColumn(),
                    TextColumn("{task.completed:.1f}/{task.total:.1f} s audio, {task.fields[utterances]} utterances"),
                    TimeElapsedColumn(), console=console(stderr=True), disable=not enabled)
