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


def level_pct(alpha: float) -> str:
    """The confidence level of intervals at `alpha` as a percentage: 0.05 -> "95%",
    0.07 -> "93%", 0.001 -> "99.9%" (not int(100 * (1 - alpha)), which makes 0.07 "92%")."""
    return f"{round(100 * (1 - alpha), 6):g}%"
