"""The one markdown-table helper: exact output, and a ragged row refused."""

import polars as pl
import pytest

from recsim.report.tables import frame_table, markdown_table


def test_markdown_table_exact_text():
    assert markdown_table(["task", "acc"], [["topic", "0.912"], ["rating", 3]]) == (
        "| task | acc |\n|---|---|\n| topic | 0.912 |\n| rating | 3 |")


def test_markdown_table_with_no_rows_is_header_and_separator():
    assert markdown_table(["a"], []) == "| a |\n|---|"


def test_frame_table_formats_floats_only():
    frame = pl.DataFrame({"method": ["flat"], "recall@10": [0.123456], "members": [7]})
    assert frame_table(frame) == "| method | recall@10 | members |\n|---|---|---|\n| flat | 0.1235 | 7 |"


def test_ragged_row_is_refused():
    with pytest.raises(ValueError, match="2 cells for 3 headers"):
        markdown_table(["a", "b", "c"], [["x", "y"]])
