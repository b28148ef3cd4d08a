"""`recsim-run data=logs`: a team's files and its own model scores through the main job.

The logs are the debug world (conf/world/debug.yaml) written as files (recsim.world.logs
.write_logs), its evaluation period only, so the numbers can be checked against the world's.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from recsim.jobs.run import run
from recsim.jobs.write_logs import eval_period, score_files
from recsim.paths import CONF_DIR
from recsim.world.logs import LogsConfig, read_logs, write_logs
from recsim.world.world import build_world

ROOT = Path(__file__).resolve().parents[1]
FAST = ["sim.n_bootstrap=50", "sim.extra_intervals=[]", "sim.control.name=production",
        "sim.treatment.name=candidate"]


def _compose(overrides: list[str]):
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        return compose("config", overrides=overrides)


@pytest.fixture(scope="module")
def world():
    cfg = _compose(["world=debug"])
    return eval_period(build_world(instantiate(cfg.world)), cfg.ranker.train_fraction)


def _write(world, out: Path, fmt="parquet", string_ids=False, base=1) -> dict[str, Path]:
    return write_logs(world, out, fmt, string_ids, base) | score_files(world, out, fmt, string_ids)


def _overrides(files: dict[str, Path], *extra: str) -> list[str]:
    tables = [f"data.{t}={files[t]}" for t in ("posts", "impressions", "members", "candidates")
              if t in files]
    return ["data=logs", *tables, f"sim.control.scores={files['production']}",
            f"sim.treatment.scores={files['candidate']}", *FAST, *extra]


def _run(files: dict[str, Path], out: Path, *extra: str) -> dict:
    return run(_compose(_overrides(files, *extra)), str(out))


# --- every kind of bad input: the file, the column, the first bad values; nothing written ----


def _edit(table: str, change):
    """Rewrite `table`'s parquet file through `change(frame)`."""
    def mutate(files, tmp):
        change(pl.read_parquet(files[table])).write_parquet(files[table])
        return []
    return mutate


def _first(column: str, value, dtype=None):
    """The column with its first value replaced (cast to `dtype` first)."""
    def change(frame):
        col = frame[column].cast(dtype) if dtype else frame[column]
        return frame.with_columns(col.scatter(0, value))
    return change


def _bytes(table: str, content):
    def mutate(files, tmp):
        data = files[table].read_bytes()
        files[table].write_bytes(content(data))
        return []
    return mutate


def _csv(table: str, change, raw=lambda b: b):
    """`table` as a CSV file through `change(frame)` and `raw(bytes)`."""
    def mutate(files, tmp):
        path = tmp / f"{table}.csv"
        change(pl.read_parquet(files[table])).write_csv(path)
        path.write_bytes(raw(path.read_bytes()))
        return [f"data.{table}={path}"]
    return mutate


def _base(position_base: int, shift: int):
    def mutate(files, tmp):
        _edit("impressions", lambda f: f.with_columns(pl.col("position") + shift))(files, tmp)
        return [f"data.position_base={position_base}"]
    return mutate


def _drop_row(table: str):
    return _edit(table, lambda f: f.slice(1))


def _drop_post_of_first_impression(files, tmp):
    post = pl.read_parquet(files["impressions"])["post_id"][0]
    _edit("posts", lambda f: f.filter(pl.col("post_id") != post))(files, tmp)
    return []


def _drop_member_of_first_impression(files, tmp):
    member = pl.read_parquet(files["impressions"])["member_id"][0]
    _edit("members", lambda f: f.filter(pl.col("member_id") != member))(files, tmp)
    return []


def _drop_first_shown_candidate(files, tmp):
    first = pl.read_parquet(files["impressions"]).row(0, named=True)
    _edit("candidates", lambda f: f.filter(~((pl.col("request_id") == first["request_id"])
                                             & (pl.col("post_id") == first["post_id"]))))(files, tmp)
    return []


BAD_INPUTS = [  # (id, mutate, file, message fragment)
    ("missing column", _edit("impressions", lambda f: f.drop("propensity")),
     "impressions.parquet", "column 'propensity': missing"),
    ("float position", _edit("impressions", lambda f: f.with_columns(pl.col("position") * 1.0)),
     "impressions.parquet", "column 'position': wrong dtype Float64"),
    ("string post ids", _edit("impressions", lambda f: f.with_columns(pl.col("post_id").cast(str))),
     "impressions.parquet", "column 'post_id': wrong dtype String, expected Int64"),
    ("null outcome", _edit("impressions", _first("click", None)),
     "impressions.parquet", "column 'click': 1 null values"),
    ("propensity 0", _edit("impressions", _first("propensity", 0.0)),
     "impressions.parquet", "column 'propensity': 1 values outside (0, 1] (first: 0.0)"),
    ("propensity 1.5", _edit("impressions", _first("propensity", 1.5)),
     "impressions.parquet", "column 'propensity': 1 values outside (0, 1] (first: 1.5)"),
    ("NaN propensity", _edit("impressions", _first("propensity", float("nan"))),
     "impressions.parquet", "column 'propensity': 1 NaN or infinite values (first: nan)"),
    ("inf dwell", _edit("impressions", _first("dwell_seconds", float("inf"))),
     "impressions.parquet", "column 'dwell_seconds': 1 NaN or infinite values (first: inf)"),
    ("negative dwell", _edit("impressions", _first("dwell_seconds", -1.0)),
     "impressions.parquet", "column 'dwell_seconds': 1 negative values (first: -1.0)"),
    ("outcome 2", _edit("impressions", _first("like", 2, pl.Int64)),
     "impressions.parquet", "column 'like': 1 values other than 0/1 (first: 2)"),
    ("duplicate slot", _edit("impressions", _first("position", 2)),
     "impressions.parquet", "column '(request_id, position)': 2 rows with duplicate ids"),
    ("duplicate post", _edit("impressions", lambda f: f.with_columns(
        f["post_id"].scatter(1, f["post_id"][0]))),
     "impressions.parquet", "column '(request_id, post_id)': 2 rows with duplicate ids"),
    ("unknown post", _drop_post_of_first_impression, "impressions.parquet",
     "column 'post_id': 1 unknown ids"),
    ("unknown member", _drop_member_of_first_impression, "impressions.parquet",
     "column 'member_id': 1 unknown ids"),
    ("shown post not a candidate", _drop_first_shown_candidate, "impressions.parquet",
     "column 'post_id': 1 shown posts not among their request's candidates"),
    ("duplicate candidate", _edit("candidates", lambda f: f.vstack(f.head(1))),
     "candidates.parquet", "column '(request_id, post_id)': 2 rows with duplicate ids"),
    ("header-only CSV", _csv("impressions", lambda f: f.head(0)),
     "impressions.csv", "impressions table is empty (0 rows)"),
    ("zero bytes", _bytes("impressions", lambda b: b""),
     "impressions.parquet", "impressions file is empty (0 bytes)"),
    ("truncated parquet", _bytes("impressions", lambda b: b[: len(b) // 2]),
     "impressions.parquet", "impressions: cannot be read as parquet"),
    ("invalid UTF-8", _csv("posts", _first("text", "PLACEHOLDER"),
                           lambda b: b.replace(b"PLACEHOLDER", b"\xff\xfe")),
     "posts.csv", "cannot be read: invalid utf-8"),
    ("0-based positions declared 1-based", _base(1, -1),
     "impressions.parquet", "column 'position': 181 positions below 1"),
    ("1-based positions declared 0-based", _base(0, 0),
     "impressions.parquet", "column 'position': 181 requests without a slot 0"),
    ("NaN score", _edit("production", _first("score", float("nan"))),
     "production.parquet", "column 'score': 1 NaN or infinite values (first: nan)"),
    ("unscored candidate", _drop_row("production"),
     "production.parquet", "column 'score': 1 of the policy's 7240 candidates"),
    ("logging form", lambda files, tmp: ["data.logging_temperature=2.0"],
     "data.logging_temperature", "differ from impressions.propensity"),
]


@pytest.mark.parametrize("mutate, file, fragment", [case[1:] for case in BAD_INPUTS],
                         ids=[case[0] for case in BAD_INPUTS])
def test_every_bad_input_names_file_and_column_and_writes_nothing(world, tmp_path, mutate, file,
                                                                  fragment):
    files = _write(world, tmp_path / "logs")
    extra = ["data.logging_temperature=1.0", "data.logging_epsilon=0.1", *mutate(files, tmp_path)]
    out = tmp_path / "report"
    with pytest.raises(Exception) as err:
        _run(files, out, *extra)
    assert file in str(err.value) and fragment in str(err.value), str(err.value)
    assert not out.exists()


def test_a_bad_log_exits_non_zero_through_the_cli_and_writes_no_report(world, tmp_path):
    files = _write(world, tmp_path / "logs")
    _edit("impressions", _first("propensity", 0.0))(files, tmp_path)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    out = tmp_path / "report"
    proc = subprocess.run([sys.executable, "-m", "recsim.jobs.run", *_overrides(files),
                           f"hydra.run.dir={tmp_path / 'run'}", f"report.output_dir={out}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode != 0
    assert "impressions.parquet: column 'propensity': 1 values outside (0, 1]" in proc.stderr
    assert not out.exists() and not list((tmp_path / "run").glob("report.*"))


# --- valid logs ------------------------------------------------------------------------------


def test_string_ids_and_0_based_positions_read_to_the_worlds_tables(world, tmp_path):
    for fmt in ("parquet", "csv"):
        files = write_logs(world, tmp_path / fmt, fmt, string_ids=True, position_base=0)
        logs = read_logs(LogsConfig(**{k: str(v) for k, v in files.items()}, position_base=0))
        # the world's request ids are 0..R-1 of the full world; the codes keep their order
        codes = world.impressions["request_id"].rank("dense").cast(pl.Int64) - 1
        assert logs.impressions.equals(world.impressions.with_columns(request_id=codes))
        assert logs.request_keys["request_key"][0] == f"r{world.impressions['request_id'].min():09d}"
        assert logs.members.equals(world.members) and logs.posts.equals(world.posts)


def _shards(files: dict[str, Path], out: Path) -> dict[str, Path]:
    """The impressions as a directory of three parquet shards."""
    out.mkdir()
    frame = pl.read_parquet(files["impressions"])
    for i, part in enumerate(np.array_split(np.arange(frame.height), 3)):
        frame[part].write_parquet(out / f"part-{i}.parquet")
    return {**files, "impressions": out}


def _figures(report: dict) -> list:
    return ([(x["estimator"], x["lift"], x["ci_low"], x["ci_high"], x["p_value"])
             for x in report["lifts"]]
            + [(e["policy"], e["name"], e["value"], e["ci_low"], e["ci_high"])
               for e in report["estimates"]] + [report["support"]])


def test_csv_parquet_and_shards_with_string_ids_give_the_integer_logs_estimates(world, tmp_path):
    logging_form = ["data.logging_temperature=1.0", "data.logging_epsilon=0.1", "sim.slate_samples=8"]
    reference = _run(_write(world, tmp_path / "int"), tmp_path / "r0", *logging_form)
    layouts = {
        "csv": _write(world, tmp_path / "csv", "csv", string_ids=True, base=0),
        "shards": _shards(_write(world, tmp_path / "str", string_ids=True, base=0),
                          tmp_path / "shards"),
    }
    for name, files in layouts.items():
        report = _run(files, tmp_path / name, "data.position_base=0", *logging_form)
        assert _figures(report) == _figures(reference), name
    names = [x["estimator"] for x in reference["lifts"]]
    slate = list(_compose([]).sim.slate_estimators)  # whole-slate: iips (and pbm)
    assert names == ["replay", "ips", "clipped_ips", "snips", *slate]  # dm, dr, sndr skipped
    assert reference["truth"] is None and reference["data"]["estimates_only"]
    assert any(line.startswith("estimators ['dm', 'dr', 'sndr']")
               for line in reference["data"]["skipped"])
    markdown = (tmp_path / "r0" / "report.md").read_text()
    assert "**Estimates only**" in markdown and "simulated online A/B" not in markdown


def test_without_candidates_the_score_files_name_them_and_slate_estimators_are_skipped(
        world, tmp_path):
    files = _write(world, tmp_path / "logs")
    with_candidates = _run(files, tmp_path / "a")
    files.pop("candidates")
    without = _run(files, tmp_path / "b")
    assert _figures(without) == _figures(with_candidates)  # the score files cover the candidates
    assert [x["estimator"] for x in without["lifts"]] == ["replay", "ips", "clipped_ips", "snips"]
    slate = list(_compose([]).sim.slate_estimators)
    assert any(f"slate estimators {slate}" in line for line in without["data"]["skipped"])
