"""Tables printed for people: whole cells at any width (an 80-column terminal or a log file).

A table that does not fit is not squeezed cell by cell ("stude…", "17,39…", a name over five
lines): :func:`narrow_table` first wraps headers onto two lines and tightens the gaps, then
gives the rows short labels (``A``, ``B``, ...) with a legend under the table, and only when
even that cannot fit prints the Markdown table, whose lines may run long but stay whole.
"""

from __future__ import annotations

import string
from collections.abc import Sequence


def _two_lines(header: str) -> list[str]:
    """A header split at the space nearest its middle (one word stays one line)."""
    spaces = [i for i, c in enumerate(header) if c == " "]
    if not spaces:
        return [header, ""]
    cut = min(spaces, key=lambda i: abs(i - len(header) / 2))
    return [header[:cut], header[cut + 1:]]


def _render(headers: list[list[str]], rows: list[list[str]], gap: int) -> list[str]:
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(headers)
    widths = [max([len(part) for part in h] + [len(c) for c in col])
              for h, col in zip(headers, columns, strict=True)]

    def line(cells: Sequence[str]) -> str:
        # The first column (row labels) reads left to right; numbers align on the right.
        parts = [c.ljust(w) if i == 0 else c.rjust(w)
                 for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return (" " * gap).join(parts).rstrip()

    lines = [line([h[k] for h in headers]) for k in range(len(headers[0]))]
    lines = [x for x in lines if x.strip()]
    rule = (" " * gap).join("-" * w for w in widths)
    return [*lines, rule, *(line(r) for r in rows)]


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """The table as Markdown (cells whole, lines as long as they need)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def short_labels(n: int) -> list[str]:
    """``A`` ... ``Z``, then ``A1`` ... (row labels for a legend)."""
    letters = string.ascii_uppercase
    return [letters[i % 26] + (str(i // 26) if i >= 26 else "") for i in range(n)]


def narrow_table(headers: Sequence[str], rows: Sequence[Sequence[str]], width: int = 80,
                 title: str | None = None) -> str:
    """The table as text of at most ``width`` columns, every cell whole.

    Tried in order: one-line headers, headers on two lines (2-space gaps, then 1), then the
    same with short row labels and a legend; the Markdown table when none fits.

    Args:
        headers: Column names; the first column labels the rows.
        rows: Formatted cells, one list per row.
        width: Most characters per line (a terminal's width; 80 in a log).
        title: A line above the table.
    """
    rows = [[str(c) for c in r] for r in rows]
    one = [[h] for h in headers]
    two = [_two_lines(h) for h in headers]
    labels = short_labels(len(rows))
    short_rows = [[label, *r[1:]] for label, r in zip(labels, rows, strict=True)]
    legend = [f"  {label} = {r[0]}" for label, r in zip(labels, rows, strict=True)]
    head = [title] if title else []
    for table_rows, extra in ((rows, []), (short_rows, legend)):
        for header in (one, two):
            for gap in (2, 1):
                lines = _render(header, table_rows, gap)
                if max(len(x) for x in lines) <= width and all(len(x) <= width for x in extra):
                    return "\n".join([*head, *lines, *extra])
    return "\n".join([*head, markdown_table(headers, rows)])
