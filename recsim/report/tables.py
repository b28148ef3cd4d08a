"""Markdown tables: the one helper every report, job summary and model card builds them with."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import polars as pl


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub-flavoured table: header row, separator, one line per row (cells str()-ed).

    Example::

        markdown_table(["task", "acc"], [["topic", "0.912"]])
        # '| task | acc |\\n|---|---|\\n| topic | 0.912 |'
    """
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"markdown_table: a row has {len(row)} cells for {len(headers)} "
                             f"headers: {list(row)[:4]}")
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(lines)


def frame_table(frame: pl.DataFrame, float_format: str = ".4f") -> str:
    """A polars frame as a markdown table; floats formatted with `float_format`."""
    def fmt(v):
        return format(v, float_format) if isinstance(v, float) else str(v)
    return markdown_table(frame.columns, [[fmt(v) for v in row] for row in frame.iter_rows()])


def pct(x: float) -> str:
    """A relative lift as a signed percentage with two decimals ("n/a" when not finite)."""
    return f"{100 * x:+.2f}%" if np.isfinite(x) else "n/a"
