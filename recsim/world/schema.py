"""Polars schemas of the world's tables and one `validate` that checks a frame against them.

Every stage boundary (a file read, a world built, an adapter's output) calls `validate`, which
collects *every* violation and raises one `SchemaError` naming the file, the column and the
problem of each, e.g.::

    impressions.parquet: column 'propensity': 3 values outside (0, 1] (first: 0.0)

Tables:
    CORPUS       labelled post texts from the data packages (recsim/corpus.py)
    POSTS        CORPUS + author and creation time (recsim/world.py)
    MEMBERS      member profile text and numeric features
    IMPRESSIONS  one row per shown post: request, slot, logging propensity, outcomes
    CANDIDATES   the logging policy's candidate set per request, with its scores
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

SPLITS = ("train", "validation", "test")


class SchemaError(ValueError):
    """A frame violates its schema. `violations` lists every problem, one line each."""

    def __init__(self, source: str, violations: list[str]):
        self.source = source
        self.violations = violations
        super().__init__("\n".join(f"{source}: {v}" for v in violations))


@dataclass(frozen=True)
class Column:
    """One column: its dtype, whether nulls are allowed, and an optional value check.

    `check` is a polars expression that is True for *valid* values; `problem` describes the
    invalid ones ("outside (0, 1]").
    """

    name: str
    dtype: pl.DataType | type[pl.DataType]
    nullable: bool = False
    check: pl.Expr | None = None
    problem: str = ""


@dataclass(frozen=True)
class TableSchema:
    name: str
    columns: tuple[Column, ...]
    unique: tuple[tuple[str, ...], ...] = field(default=())  # column sets that must be unique

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def polars_schema(self) -> pl.Schema:
        """The schema with concrete dtypes, for building empty frames or casting."""
        concrete = {pl.Datetime: pl.Datetime("us")}
        return pl.Schema({c.name: concrete.get(c.dtype, c.dtype) for c in self.columns})


def _col(name, dtype, nullable=False, check=None, problem=""):
    return Column(name, dtype, nullable, check, problem)


def _ge0(name: str, dtype) -> Column:
    return _col(name, dtype, check=pl.col(name) >= 0, problem="negative values")


_LABEL_COLUMNS = (
    _col("label_rating", pl.Int8, nullable=True, check=pl.col("label_rating").is_between(1, 5),
         problem="ratings outside 1..5"),
    _col("label_department", pl.String, nullable=True),
    _col("label_class", pl.String, nullable=True),
    _col("label_hashtag", pl.String, nullable=True),
)

CORPUS = TableSchema(
    "corpus",
    (
        _col("post_id", pl.Int64),
        _col("text", pl.String, check=pl.col("text").str.len_chars() > 0, problem="empty texts"),
        _col("lang", pl.String),
        _col("source", pl.String),
        _col("topic", pl.String),
        _col("label", pl.String),
        *_LABEL_COLUMNS,
        _col("split", pl.String, check=pl.col("split").is_in(SPLITS),
             problem=f"values not in {SPLITS}"),
    ),
    unique=(("post_id",),),
)

POSTS = TableSchema(
    "posts",
    (
        *CORPUS.columns[:1],
        _col("author_id", pl.Int64),
        _col("created_at", pl.Datetime),
        *CORPUS.columns[1:],
    ),
    unique=(("post_id",),),
)

MEMBERS = TableSchema(
    "members",
    (
        _col("member_id", pl.Int64),
        _col("profile_text", pl.String),
        _col("lang", pl.String),
        _ge0("connections", pl.Int64),
        _col("activity_level", pl.Float64, check=pl.col("activity_level").is_between(0, 1),
             problem="values outside [0, 1]"),
        _ge0("tenure_days", pl.Int64),
        _ge0("posts_per_week", pl.Float64),
    ),
    unique=(("member_id",),),
)

IMPRESSIONS = TableSchema(
    "impressions",
    (
        _col("request_id", pl.Int64),
        _col("member_id", pl.Int64),
        _col("post_id", pl.Int64),
        _col("position", pl.Int32, check=pl.col("position") >= 1, problem="positions below 1"),
        _col("timestamp", pl.Datetime),
        _col("propensity", pl.Float64,
             check=(pl.col("propensity") > 0) & (pl.col("propensity") <= 1),
             problem="values outside (0, 1]"),
        _col("click", pl.Boolean),
        _col("like", pl.Boolean),
        _col("comment", pl.Boolean),
        _col("share", pl.Boolean),
        _ge0("dwell_seconds", pl.Float64),
    ),
    unique=(("request_id", "position"), ("request_id", "post_id")),
)

CANDIDATES = TableSchema(
    "candidates",
    (
        _col("request_id", pl.Int64),
        _col("post_id", pl.Int64),
        _col("logging_score", pl.Float64),
    ),
    unique=(("request_id", "post_id"),),
)


def _preview(values: pl.Series) -> str:
    return ", ".join(repr(v) for v in values.head(3).to_list())


def validate(
    frame: pl.DataFrame,
    schema: TableSchema,
    source: str | Path,
    known_ids: dict[str, pl.Series] | None = None,
) -> pl.DataFrame:
    """Check `frame` against `schema`; return it unchanged or raise `SchemaError`.

    Args:
        frame: the table to check.
        schema: one of the TableSchema constants of this module.
        source: the file (or description) the frame came from; every message starts with it.
        known_ids: column name -> the ids that exist (e.g. {"member_id": members["member_id"]});
            values of that column outside it are reported as unknown ids.

    Checks, in order: empty table, missing columns, wrong dtypes, nulls where not allowed,
    NaN or infinite floats, value checks (propensity in (0, 1], positions >= 1, ...),
    duplicate keys, unknown ids.
    """
    source = str(source)
    if frame.height == 0:
        raise SchemaError(source, [f"{schema.name} table is empty (0 rows)"])
    problems, typed_ok = _column_problems(frame, schema)
    problems += _value_problems(frame, schema, typed_ok)
    problems += _duplicate_problems(frame, schema, typed_ok)
    problems += _unknown_id_problems(frame, known_ids or {}, typed_ok)
    if problems:
        raise SchemaError(source, problems)
    return frame


def _column_problems(frame: pl.DataFrame, schema: TableSchema) -> tuple[list[str], set[str]]:
    """Missing columns and wrong dtypes; and the columns that are present with their dtype."""
    problems: list[str] = []
    present = frame.collect_schema()
    typed_ok: set[str] = set()
    for col in schema.columns:
        if col.name not in present:
            problems.append(f"column '{col.name}': missing (expected dtype {col.dtype})")
        elif present[col.name] != col.dtype:
            problems.append(
                f"column '{col.name}': wrong dtype {present[col.name]}, expected {col.dtype}"
            )
        else:
            typed_ok.add(col.name)
    return problems, typed_ok


def _value_problems(frame: pl.DataFrame, schema: TableSchema, typed_ok: set[str]) -> list[str]:
    """Nulls where not allowed and values failing a column's check (well-typed columns only)."""
    problems: list[str] = []
    for col in schema.columns:
        if col.name not in typed_ok:
            continue
        values = frame.get_column(col.name)
        n_null = values.null_count()
        if n_null and not col.nullable:
            problems.append(f"column '{col.name}': {n_null} null values, nulls are not allowed")
        if values.dtype.is_float():  # NaN passes every comparison check in polars
            bad = values.filter(values.is_not_null() & ~values.is_finite())
            if bad.len():
                problems.append(f"column '{col.name}': {bad.len()} NaN or infinite values "
                                f"(first: {_preview(bad)})")
        if col.check is not None:
            bad = frame.filter(col.check.not_() & pl.col(col.name).is_not_null())[col.name]
            if bad.len():
                problems.append(
                    f"column '{col.name}': {bad.len()} {col.problem} (first: {_preview(bad)})"
                )
    return problems


def _duplicate_problems(frame: pl.DataFrame, schema: TableSchema, typed_ok: set[str]) -> list[str]:
    """Keys of `schema.unique` that repeat (keys with a column missing or mistyped are skipped)."""
    problems: list[str] = []
    for key in schema.unique:
        if all(k in typed_ok for k in key):
            dup = frame.select(key).is_duplicated()
            if dup.any():
                first = frame.filter(dup).select(key).head(3).rows()
                what = key[0] if len(key) == 1 else f"({', '.join(key)})"
                problems.append(
                    f"column '{what}': {int(dup.sum())} rows with duplicate ids (first: {first})"
                )
    return problems


def _unknown_id_problems(frame: pl.DataFrame, known_ids: dict[str, pl.Series],
                         typed_ok: set[str]) -> list[str]:
    """Ids in a column of `known_ids` that are not among the known ones."""
    problems: list[str] = []
    for name, ids in known_ids.items():
        if name in typed_ok:
            unknown = frame.filter(~pl.col(name).is_in(ids.implode()))[name].unique()
            if unknown.len():
                problems.append(
                    f"column '{name}': {unknown.len()} unknown ids (first: {_preview(unknown)})"
                )
    return problems


def lookup_sorted(sorted_ids: np.ndarray, ids: np.ndarray, name: str) -> np.ndarray:
    """Row positions of `ids` in the sorted array `sorted_ids`; KeyError naming unknown ids."""
    ids = np.asarray(ids)
    idx = np.searchsorted(sorted_ids, ids).clip(0, len(sorted_ids) - 1)
    unknown = sorted_ids[idx] != ids
    if unknown.any():
        raise KeyError(f"unknown {name}(s): {ids[unknown][:5].tolist()} "
                       f"({int(unknown.sum())} of {ids.size})")
    return idx
