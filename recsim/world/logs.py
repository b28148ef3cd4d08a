"""A team's own logs as the run's data (`recsim-run data=logs`, conf/data/logs.yaml).

Files (each parquet, CSV, or a directory of parquet shards; read by recsim/world/files.py,
lazily: only the columns named here are collected, once, with no Python rows):

    posts        post_id, author_id, created_at, text; optional: the other schema.POSTS
                 columns (labels, lang, topic)
    impressions  request_id, member_id, post_id, position, timestamp, propensity (the logging
                 policy's probability of the post at its slot given the slots above); any of
                 the outcome columns click, like, comment, share, dwell_seconds
    members      optional: member_id; optional: the other schema.MEMBERS columns
    candidates   optional: request_id, post_id and logging_score or logging_prob: every post
                 each request could have shown, with the logging policy's score or
                 probability (a probability p becomes the score log p)
    scores       a policy's own model scores (`sim.control.scores`): request_id, post_id, score
                 over the logged candidates (`read_scores`)

Accepted forms; anything else is an error, never a silent cast:

    ids          integers of any width; request ids may also be strings (encoded as their
                 rank in sorted order, the same map for every file)
    position     integers, 1-based, or 0-based with data.position_base=0 (kept 1-based here)
    outcomes     Boolean, or the integers 0 and 1; dwell_seconds a number >= 0
    times        datetimes (CSV: ISO 8601, 2024-05-01T12:00:00); a zone is converted to UTC
    names        ours, or a file's own through the map data.columns (ours: theirs)

Errors (schema.SchemaError, a ValueError) name the file, the column and the first bad values:
missing or wrongly typed columns, nulls, propensity outside (0, 1], NaN or infinite numbers,
negative dwell, duplicate (request, position) and (request, post), impressions of unknown posts
or members, a request without its first slot, shown posts missing from the request's
candidates, empty and zero-byte files, truncated parquet, invalid UTF-8.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from recsim.world import checks, files
from recsim.world.schema import (
    CANDIDATES,
    IMPRESSIONS,
    MEMBERS,
    POSTS,
    Column,
    SchemaError,
    TableSchema,
    validate,
)

log = logging.getLogger(__name__)

TABLES = ("posts", "impressions", "members", "candidates")
OUTCOMES = ("click", "like", "comment", "share", "dwell_seconds")
REQUIRED = {
    "posts": ("post_id", "author_id", "created_at", "text"),
    "impressions": ("request_id", "member_id", "post_id", "position", "timestamp", "propensity"),
    "members": ("member_id",),
    "candidates": ("request_id", "post_id"),
}
_PROB = Column("logging_prob", pl.Float64, check=(pl.col("logging_prob") > 0)
               & (pl.col("logging_prob") <= 1), problem="values outside (0, 1]")
_BASE = {"posts": POSTS, "impressions": IMPRESSIONS, "members": MEMBERS,
         "candidates": TableSchema("candidates", (*CANDIDATES.columns, _PROB), CANDIDATES.unique)}
SCORES = TableSchema("scores", (Column("request_id", pl.Int64), Column("post_id", pl.Int64),
                                Column("score", pl.Float64)), unique=(("request_id", "post_id"),))
COLUMN_NAMES = sorted({c.name for s in (*_BASE.values(), SCORES) for c in s.columns})


@dataclass
class WorldDataConfig:
    """`data=world` (conf/data/world.yaml): the synthetic world of conf/world/, with its truth."""


@dataclass
class LogsConfig:
    """`data=logs` (conf/data/logs.yaml): a team's files; relative paths from the directory
    the run starts in."""

    posts: str | None = None
    impressions: str | None = None
    members: str | None = None  # optional
    candidates: str | None = None  # optional (whole-slate estimators need it)
    position_base: int = 1  # 1: the first slot is position 1; 0: it is position 0
    columns: dict[str, str] = field(default_factory=dict)  # our column name: the files' name
    # The logging policy's form over the candidates' scores, for the whole-slate estimators:
    # Plackett-Luce at this temperature with epsilon-uniform exploration (as the world's,
    # recsim.world.slates.plackett_luce); None: not declared, those estimators are skipped.
    logging_temperature: float | None = None
    logging_epsilon: float = 0.0

    def __post_init__(self):
        for table in ("posts", "impressions"):
            if not getattr(self, table):
                raise ValueError(f"data.{table}: required with data=logs (a parquet or CSV file, "
                                 "or a directory of parquet shards)")
        for table in TABLES:
            path = getattr(self, table)
            if path is not None and not Path(path).exists():
                raise ValueError(f"data.{table}: {path} does not exist")
        checks.one_of("data.position_base", self.position_base, (0, 1))
        checks.all_known("data.columns", list(self.columns), COLUMN_NAMES, nonempty=False)
        checks.positive("data.logging_temperature", self.logging_temperature, optional=True)
        checks.between("data.logging_epsilon", self.logging_epsilon, 0, 1)


@dataclass
class Logs:
    """The validated tables, in the world's dtypes (request_id Int64, position 1-based Int32)."""

    posts: pl.DataFrame
    impressions: pl.DataFrame
    members: pl.DataFrame | None
    candidates: pl.DataFrame | None  # request_id, post_id, logging_score
    request_keys: pl.DataFrame | None  # (request_key, request_id) when the files' are strings
    files: dict[str, str]  # table -> path

    @property
    def outcomes(self) -> list[str]:
        return [c for c in OUTCOMES if c in self.impressions.columns]


def _table_schema(table: str, present: pl.Schema, position_base: int = 1) -> TableSchema:
    """The table's required columns and the optional ones the file has; request ids may be
    strings; positions from `position_base`."""
    base = _BASE[table]
    cols = [c for c in base.columns if c.name in REQUIRED[table] or c.name in present]
    if present.get("request_id") == pl.String:
        cols = [Column("request_id", pl.String) if c.name == "request_id" else c for c in cols]
    if table == "impressions":
        cols = [Column("position", pl.Int32, check=pl.col("position") >= position_base,
                       problem=f"positions below {position_base} (data.position_base)")
                if c.name == "position" else c for c in cols]
    return TableSchema(base.name, tuple(cols), base.unique)


def _read(path: str, schema_of, columns: dict[str, str], known: dict | None = None):
    """Scan `path`, rename the mapped columns, collect the schema's columns once, conform and
    validate. `schema_of(present)` gives the TableSchema for the file's columns."""
    lazy = files.scan(path, schema_of(pl.Schema()).name)
    present = files.columns_of(lazy, path)
    renames = {theirs: ours for ours, theirs in columns.items() if theirs in present and theirs != ours}
    lazy = lazy.rename(renames)
    schema = schema_of(files.columns_of(lazy, path))
    frame = files.conform(files.collect(lazy, path, schema.names), schema, path)
    return validate(frame, schema, path, known)


def _first_slots(impressions: pl.DataFrame, path: str, base: int) -> None:
    """Every request has a slot at `base` (its top slot: what top-slot estimators read)."""
    firsts = impressions.filter(pl.col("position") == base)["request_id"].unique()
    missing = impressions.filter(~pl.col("request_id").is_in(firsts.implode()))["request_id"].unique()
    if missing.len():
        raise SchemaError(path, [(f"column 'position': {missing.len()} requests without a slot "
                                 f"{base} (first: {missing.sort().head(3).to_list()}); is "
                                 f"data.position_base={base} right?")])


def encode_requests(frame: pl.DataFrame, keys: pl.DataFrame | None) -> pl.DataFrame:
    """`frame` with string request ids replaced by their Int64 codes (`keys`); unchanged when
    the files' ids are integers (keys None)."""
    if keys is None:
        return frame
    order = frame.columns
    return (frame.rename({"request_id": "request_key"})
            .join(keys, on="request_key", how="left", maintain_order="left").select(order))


def _request_keys(impressions: pl.DataFrame) -> pl.DataFrame | None:
    if impressions.schema["request_id"] != pl.String:
        return None
    return (impressions.select(request_key=pl.col("request_id").unique().sort())
            .with_columns(request_id=pl.int_range(pl.len(), dtype=pl.Int64)))


def _candidates(cfg: LogsConfig, impressions: pl.DataFrame, post_ids: pl.Series) -> pl.DataFrame:
    """The candidates file as (request_id, post_id, logging_score), raw request ids; every shown
    post among its request's candidates."""
    def schema_of(present):
        table = _table_schema("candidates", present)
        score = "logging_prob" if "logging_prob" in present and "logging_score" not in present \
            else "logging_score"
        return TableSchema(table.name, tuple(c for c in table.columns if c.name in
                                             (*REQUIRED["candidates"], score)), table.unique)
    known = {"post_id": post_ids, "request_id": impressions["request_id"].unique()}
    frame = _read(cfg.candidates, schema_of, cfg.columns, known)
    if "logging_prob" in frame.columns:
        frame = frame.select("request_id", "post_id", logging_score=pl.col("logging_prob").log())
    shown = impressions.join(frame, on=["request_id", "post_id"], how="anti")
    if shown.height:
        raise SchemaError(cfg.impressions, [
            (f"column 'post_id': {shown.height} shown posts not among their request's candidates "
            f"in {cfg.candidates} (first (request_id, post_id): "
            f"{shown.select('request_id', 'post_id').head(3).rows()})")])
    return frame


def read_logs(cfg: LogsConfig) -> Logs:
    """Read and check every file of `cfg`; a SchemaError naming the file on the first bad one."""
    cols = cfg.columns
    posts = _read(cfg.posts, lambda p: _table_schema("posts", p), cols)
    members = (None if cfg.members is None else
               _read(cfg.members, lambda p: _table_schema("members", p), cols))
    known = {"post_id": posts["post_id"]} | ({} if members is None else
                                             {"member_id": members["member_id"]})
    impressions = _read(cfg.impressions,
                        lambda p: _table_schema("impressions", p, cfg.position_base), cols, known)
    _first_slots(impressions, cfg.impressions, cfg.position_base)
    candidates = (None if cfg.candidates is None else
                  _candidates(cfg, impressions, posts["post_id"]))
    keys = _request_keys(impressions)
    impressions = encode_requests(impressions, keys).with_columns(
        position=(pl.col("position") + (1 - cfg.position_base)).cast(pl.Int32))
    candidates = None if candidates is None else encode_requests(candidates, keys)
    paths = {t: str(getattr(cfg, t)) for t in TABLES if getattr(cfg, t) is not None}
    log.info("logs: %d posts, %s members, %d impressions of %d requests, %s candidates",
             posts.height, "no" if members is None else members.height, impressions.height,
             impressions["request_id"].n_unique(),
             "no" if candidates is None else candidates.height)
    return Logs(posts, impressions, members, candidates, keys, paths)


def read_scores(path: str, known: dict[str, pl.Series], columns: dict[str, str] | None = None,
                request_keys: pl.DataFrame | None = None) -> pl.DataFrame:
    """A policy's scores file -> (request_id, post_id, score), request ids encoded as the log's.

    known: {"request_id": the log's request ids (as in the files), "post_id": the posts}.
    """
    def schema_of(present):
        if request_keys is not None:
            return TableSchema("scores", (Column("request_id", pl.String), *SCORES.columns[1:]),
                               SCORES.unique)
        return SCORES
    frame = _read(path, schema_of, columns or {}, known)
    return encode_requests(frame, request_keys)


def write_logs(world, out_dir: str | Path, fmt: str = "parquet", string_ids: bool = False,
               position_base: int = 1) -> dict[str, Path]:
    """The synthetic `world`'s posts, members, impressions and candidates as the files
    `read_logs` reads (tests, the worked example, benchmarks). `string_ids`: request ids as
    zero-padded strings ("r000000042", sorted as the integers); `position_base` 0: 0-based."""
    checks.one_of("fmt", fmt, ("parquet", "csv"))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    request = (pl.format("r{}", pl.col("request_id").cast(pl.String).str.zfill(9))
               if string_ids else pl.col("request_id"))
    tables = {
        "posts": world.posts,
        "members": world.members,
        "impressions": world.impressions.with_columns(
            request_id=request, position=pl.col("position") - (1 - position_base)),
        "candidates": world.candidates.with_columns(request_id=request),
    }
    paths = {}
    for name, frame in tables.items():
        paths[name] = out / f"{name}.{fmt}"
        if fmt == "csv":
            frame.write_csv(paths[name])
        else:
            frame.write_parquet(paths[name])
    return paths
