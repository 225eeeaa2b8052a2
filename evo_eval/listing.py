"""Tables of names the user must type (`evo-eval models`, `suites`): names are never cut, other text wraps.

Rich shortens any cell that does not fit the console (80 columns when piped) with an ellipsis,
which turns `arc_challenge` into `arc_challe…`, a name nobody can type. Here the columns of names
(card names, hub ids, task names, metrics) never wrap or shorten; descriptive columns wrap; and
when the names alone are wider than the console, the table is drawn as wide as they need.
"""

from __future__ import annotations

from typing import Sequence

from rich import box
from rich.console import Console
from rich.table import Table


def listing(title: str, columns: Sequence[tuple[str, bool]], caption: str | None = None) -> Table:
    """A table whose columns are (header, is a name); names keep their full text, the rest wraps."""
    # A light box and no padding columns leave the names as much of 80 columns as possible.
    table = Table(title=title, caption=caption, caption_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False,
                  title_justify="left")
    for header, is_name in columns:
        if is_name:
            table.add_column(header, no_wrap=True, overflow="ignore", min_width=len(header))
        else:
            # Wraps at spaces; a word longer than the column folds rather than being cut.
            table.add_column(header, overflow="fold", min_width=min(len(header), 12))
    return table


def print_listing(table: Table, console: Console | None = None) -> None:
    from rich.text import Text

    console = console or Console()
    for column in table.columns:
        if column.no_wrap:  # a name column is as wide as its longest name, so nothing can shrink it
            cells = [Text.from_markup(c) if isinstance(c, str) else c for c in column.cells]
            column.min_width = max([Text(str(column.header)).cell_len, *(c.cell_len for c in cells)])
    needed = _least_width(table)
    if needed > console.width:  # never cut a name: a wider line beats a name that cannot be typed
        console = Console(width=needed, file=console.file, force_terminal=console.is_terminal,
                          no_color=console.no_color)
    console.print(table, crop=False)


def _least_width(table: Table) -> int:
    """Names at full length, the other columns at their longest word; plus padding and separators."""
    from rich.text import Text

    widths = []
    for column in table.columns:
        if column.no_wrap:
            widths.append(column.min_width or 0)
        else:
            words = [w for c in column.cells for w in Text.from_markup(str(c)).plain.split()] + [str(column.header)]
            widths.append(max(column.min_width or 0, *(len(w) for w in words)))
    left, right = table.padding[3], table.padding[1]
    return sum(widths) + (left + right) * len(widths) + len(widths) - 1
