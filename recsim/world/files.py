"""The one home for reading a table from files: parquet, CSV or a directory of parquet shards,
lazily, every failure naming the file.

    scan(path, what)                 a LazyFrame over the file(s) after the checks a scan does
                                     not make: missing, zero bytes, a parquet footer that does
                                     not read (truncated; checked per shard)
    collect(frame, path, names)      the wanted columns that are present, collected once; a
                                     polars error (invalid UTF-8, a CSV value that does not
                                     parse) becomes a SchemaError naming the file
    conform(frame, schema, source)   the accepted dtypes cast losslessly to the schema's: any
                                     integer width to the schema's integer (range checked), an
                                     integer to Float64, 0/1 integers to Boolean, any datetime
                                     unit or zone to naive UTC microseconds. Anything else is
                                     left for `validate` to refuse (wrong dtype): never a silent
                                     lossy cast
    read_table(path, schema)         scan -> collect -> conform -> schema.validate

A 10M-row log stays in polars: nothing here makes Python rows.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from recsim.world.schema import SchemaError, TableSchema, validate

PARQUET = (".parquet", ".pq")


def _parquet_files(path: Path, what: str) -> list[Path]:
    """The parquet file, or a directory's shards (sorted); each must read its footer."""
    files = sorted(p for p in path.iterdir() if p.suffix in PARQUET) if path.is_dir() else [path]
    if not files:
        raise SchemaError(str(path), [f"{what}: directory holds no *.parquet shards"])
    for file in files:
        if file.stat().st_size == 0:
            raise SchemaError(str(file), [f"{what} file is empty (0 bytes)"])
        try:
            pl.read_parquet_schema(file)
        except (pl.exceptions.PolarsError, OSError) as err:
            problem = f"{what}: cannot be read as parquet (truncated or not parquet): {err}"
            raise SchemaError(str(file), [problem]) from None
    return files


def scan(path: str | Path, what: str) -> pl.LazyFrame:
    """A lazy scan of `path` (.parquet / .pq, .csv, or a directory of parquet shards)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file ({what} table)")
    if path.is_file() and path.stat().st_size == 0:
        raise SchemaError(str(path), [f"{what} file is empty (0 bytes)"])
    if path.is_dir() or path.suffix in PARQUET:
        return pl.scan_parquet(_parquet_files(path, what))
    if path.suffix == ".csv":
        return pl.scan_csv(path, try_parse_dates=True, infer_schema_length=10_000)
    problem = (f"{what}: unknown format {path.suffix!r}; expected .parquet, .csv or a directory "
               "of .parquet shards")
    raise SchemaError(str(path), [problem])


def columns_of(frame: pl.LazyFrame, path: str | Path) -> pl.Schema:
    """The file's column names and dtypes (parquet: its metadata; CSV: the inferred ones)."""
    try:
        return frame.collect_schema()
    except (pl.exceptions.PolarsError, OSError) as err:
        raise SchemaError(str(path), [f"cannot be read: {err}"]) from None


def collect(frame: pl.LazyFrame, path: str | Path, names: list[str]) -> pl.DataFrame:
    """Collect the columns of `names` that the file has (missing ones are `validate`'s to
    report), once."""
    present = columns_of(frame, path)
    try:
        return frame.select([n for n in names if n in present]).collect()
    except (pl.exceptions.PolarsError, OSError) as err:
        raise SchemaError(str(path), [f"cannot be read: {err}"]) from None


def _preview(values: pl.Series) -> str:
    return ", ".join(repr(v) for v in values.head(3).to_list())


def _conform_column(values: pl.Series, target) -> tuple[pl.Series, str | None]:
    """`values` cast to `target` when its dtype is an accepted form of it; else unchanged
    (`validate` refuses the dtype). The problem of a cast that would lose values, if any."""
    dtype = values.dtype
    if dtype == target:
        return values, None
    if target.is_integer() and dtype.is_integer():
        lo, hi = pl.select(lo=target.min(), hi=target.max()).row(0)
        bad = values.filter((values < lo) | (values > hi))
        if bad.len():
            return values, f"{bad.len()} values outside the {target} range (first: {_preview(bad)})"
        return values.cast(target), None
    if target == pl.Float64 and (dtype.is_float() or dtype.is_integer()):
        return values.cast(pl.Float64), None
    if target == pl.Boolean and dtype.is_integer():
        bad = values.filter(~values.is_in([0, 1]))
        if bad.len():
            return values, (f"{bad.len()} values other than 0/1 (first: {_preview(bad)}); an "
                            "outcome is Boolean or 0/1")
        return values == 1, None
    if isinstance(target, pl.Datetime) and isinstance(dtype, pl.Datetime):
        if dtype.time_zone is not None:
            values = values.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
        return values.cast(pl.Datetime("us")), None
    return values, None


def conform(frame: pl.DataFrame, schema: TableSchema, source: str | Path) -> pl.DataFrame:
    """`frame` with each schema column present in an accepted form cast to the schema's dtype
    (module docstring); SchemaError naming the file and column when a cast would lose values."""
    problems, out = [], {}
    concrete = schema.polars_schema()
    for name in frame.columns:
        if name not in concrete:
            continue
        values, problem = _conform_column(frame.get_column(name), concrete[name])
        if problem:
            problems.append(f"column '{name}': {problem}")
        out[name] = values.alias(name)
    if problems:
        raise SchemaError(str(source), problems)
    return frame.with_columns(**out) if out else frame


def read_table(path: str | Path, schema: TableSchema,
               known_ids: dict[str, pl.Series] | None = None) -> pl.DataFrame:
    """Read a parquet / CSV file (or parquet shards) with `schema`'s columns, conform the
    accepted dtypes and validate; every error names the file."""
    frame = collect(scan(path, schema.name), path, schema.names)
    return validate(conform(frame, schema, path), schema, path, known_ids)
