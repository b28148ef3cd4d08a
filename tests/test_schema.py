"""Each kind of schema violation is reported with the file and the column it concerns."""

import datetime as dt

import polars as pl
import pytest

from recsim.world.files import read_table
from recsim.world.schema import IMPRESSIONS, MEMBERS, SchemaError, validate


def _impressions(**overrides) -> pl.DataFrame:
    base = {
        "request_id": [0, 0, 1],
        "member_id": [1, 1, 2],
        "post_id": [10, 11, 10],
        "position": pl.Series([1, 2, 1], dtype=pl.Int32),
        "timestamp": [dt.datetime(2026, 1, 1)] * 3,
        "propensity": [0.5, 0.25, 1.0],
        "click": [True, False, False],
        "like": [False] * 3, "comment": [False] * 3, "share": [False] * 3,
        "dwell_seconds": [12.0, 0.5, 1.0],
    }
    base.update(overrides)
    return pl.DataFrame(base)


KNOWN = {"member_id": pl.Series([1, 2]), "post_id": pl.Series([10, 11])}


def test_valid_frame_passes():
    frame = _impressions()
    assert validate(frame, IMPRESSIONS, "log.parquet", KNOWN) is frame


@pytest.mark.parametrize(
    "frame, column, problem",
    [
        (_impressions().drop("propensity"), "propensity", "missing"),
        (_impressions(position=[1, 2, 1]), "position", "wrong dtype Int64"),
        (_impressions(click=[True, None, False]), "click", "null values"),
        (_impressions(propensity=[0.5, 0.0, 1.0]), "propensity", "outside (0, 1]"),
        (_impressions(propensity=[0.5, 1.5, 1.0]), "propensity", "outside (0, 1]"),
        (_impressions(position=pl.Series([1, 1, 1], dtype=pl.Int32)), "(request_id, position)",
         "duplicate ids"),
        (_impressions(member_id=[1, 1, 99]), "member_id", "unknown ids (first: 99)"),
        (_impressions(post_id=[10, 12, 10]), "post_id", "unknown ids (first: 12)"),
        (_impressions(dwell_seconds=[1.0, -2.0, 0.0]), "dwell_seconds", "negative"),
        (_impressions(dwell_seconds=[1.0, float("nan"), 0.0]), "dwell_seconds",
         "1 NaN or infinite values (first: nan)"),
        (_impressions(dwell_seconds=[1.0, float("inf"), 0.0]), "dwell_seconds",
         "1 NaN or infinite values (first: inf)"),
        (_impressions(propensity=[0.5, float("nan"), 1.0]), "propensity", "NaN or infinite"),
    ],
)
def test_each_violation_names_file_column_and_problem(frame, column, problem):
    with pytest.raises(SchemaError) as err:
        validate(frame, IMPRESSIONS, "logs/day1.parquet", KNOWN)
    message = str(err.value)
    assert f"logs/day1.parquet: column '{column}'" in message
    assert problem in message


def test_empty_table_is_an_error():
    with pytest.raises(SchemaError, match=r"day1.parquet: impressions table is empty"):
        validate(_impressions().head(0), IMPRESSIONS, "day1.parquet")


def test_every_violation_is_reported_at_once():
    frame = _impressions(propensity=[0.0, 0.5, 0.5], click=[None, True, True]).drop("share")
    with pytest.raises(SchemaError) as err:
        validate(frame, IMPRESSIONS, "x.parquet")
    assert len(err.value.violations) == 3


def test_duplicate_member_ids():
    members = pl.DataFrame({
        "member_id": [1, 1], "profile_text": ["a", "b"], "lang": ["en", "en"],
        "connections": [3, 4], "activity_level": [0.1, 0.2], "tenure_days": [1, 2],
        "posts_per_week": [0.0, 1.0],
    })
    with pytest.raises(SchemaError, match=r"members.csv: column 'member_id': 2 rows with duplicate"):
        validate(members, MEMBERS, "members.csv")


def test_read_table_names_the_file(tmp_path):
    empty = tmp_path / "empty.parquet"
    empty.write_bytes(b"")
    with pytest.raises(SchemaError, match="empty.parquet: impressions file is empty"):
        read_table(empty, IMPRESSIONS)
    bad = tmp_path / "bad.parquet"
    _impressions(propensity=[0.5, 0.0, 1.0]).write_parquet(bad)
    with pytest.raises(SchemaError, match=r"bad.parquet: column 'propensity'"):
        read_table(bad, IMPRESSIONS)
    with pytest.raises(FileNotFoundError, match="missing.parquet"):
        read_table(tmp_path / "missing.parquet", IMPRESSIONS)


def test_a_valid_impressions_csv_reads_with_int64_positions_and_0_1_outcomes(tmp_path):
    """polars reads a CSV's position as Int64 and 0/1 outcomes as integers: both are accepted
    forms, cast losslessly; the real defects behind them are then reported."""
    path = tmp_path / "log.csv"
    _impressions().with_columns(pl.col("click").cast(pl.Int8)).write_csv(path)
    frame = read_table(path, IMPRESSIONS, KNOWN)
    assert frame.schema["position"] == pl.Int32 and frame.schema["click"] == pl.Boolean
    assert frame["click"].to_list() == [True, False, False]
    _impressions(position=pl.Series([1, 1, 1], dtype=pl.Int32)).write_csv(path)
    with pytest.raises(SchemaError, match=r"log.csv: column '\(request_id, position\)': 2 rows"):
        read_table(path, IMPRESSIONS)


@pytest.mark.parametrize("column, values, problem", [
    ("click", [1, 2, 0], "1 values other than 0/1 (first: 2)"),
    ("position", [1, 2, 3_000_000_000], "1 values outside the Int32 range (first: 3000000000)"),
])
def test_casts_that_would_lose_values_are_refused(tmp_path, column, values, problem):
    path = tmp_path / "log.parquet"
    _impressions(**{column: values}).write_parquet(path)
    with pytest.raises(SchemaError, match=rf"log.parquet: column '{column}': .*") as err:
        read_table(path, IMPRESSIONS)
    assert problem in str(err.value)


def test_unreadable_files_name_the_file(tmp_path):
    truncated = tmp_path / "cut.parquet"
    _impressions().write_parquet(truncated)
    truncated.write_bytes(truncated.read_bytes()[:40])
    with pytest.raises(SchemaError, match=r"cut.parquet: impressions: cannot be read as parquet"):
        read_table(truncated, IMPRESSIONS)
    bad_utf8 = tmp_path / "bad.csv"
    bad_utf8.write_bytes(b"request_id,lang\n1,\xff\xfe\n")
    with pytest.raises(SchemaError, match=r"bad.csv: cannot be read: .*utf-8"):
        read_table(bad_utf8, IMPRESSIONS)
