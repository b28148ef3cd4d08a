"""A team's log at scale: `recsim-run data=logs` on a 10M-impression log and two score-file
policies, read lazily (the path's own reader) against loading every file eagerly first.

The log: the synthetic world (conf/world/default.yaml) built once at `--world-rows`
impressions (1M by default: building a 10M world directly needs ~10x its 1.3 GB and a
minute more) and replicated with new request and member ids (replica j: ids + j x (max id + 1);
same posts, same two weeks) to `--rows` impressions: a team of k x the world's members.
Written as the files a team hands over: posts, members, impressions and candidates (a
directory of parquet shards, one per replica), and two score files per (request_id, post_id)
over the candidates (shards too): "production", the logging policy's own score, and
"candidate", that score plus Normal(0, `--noise`) noise (seeded per replica).

Each variant runs in its own process (its wall time and peak RSS from os.wait4, which counts
polars' and numpy's native memory; tracemalloc does not):

    write   build the world and write the files
    lazy    recsim.jobs.run.run(cfg) with data=logs: what `recsim-run data=logs` runs (without
            MLflow): files scanned lazily, only the schema's columns collected once; embeddings,
            retrieval, rankers, reward-model estimators and the truth skipped as data=logs
            skips them; the whole-slate estimators too unless --slate declares the logging form
    eager   the same run with recsim.world.files.scan replaced by pl.read_parquet of every
            column of every file (the baseline: load everything, then the same evaluation)

Both runs must give the same figures (checked; the table says so).

The policies serve the top slate_size posts by score (--temperature 0, the default here): with
Plackett-Luce policies (the config's sim.policy_temperature 0.5) the run keeps each
candidate's probability at each slot for both policies (requests x slots x candidates rows:
400M per policy at 10M impressions), which no 24 GB machine holds; --temperature 0.5 measures
that path at a size that fits (1M impressions: 7.7 GB, 4 minutes on 2 shared cores). Peak
memory at 0, measured: 2.3 GB at 1M impressions, 9.3 GB at 5M (1.76 GB per million), so 10M
needs about 18 GB free; the 24 GB machine this was written on, shared, could not give it.

    .venv/bin/python benchmarks/bench_logs.py [--rows 10000000] [--world-rows 1000000]
        [--temperature 0] [--n-bootstrap 500] [--slate] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
from _common import report

SHARDED = ("impressions", "candidates", "production", "candidate")


# --- the files: a world replicated to `rows` impressions -----------------------------------


def _world(world_rows: int, seed: int):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from recsim.jobs.schemas import register
    from recsim.paths import CONF_DIR
    from recsim.world.world import build_world

    register("config")
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        cfg = compose("config", overrides=[f"world.n_impressions={world_rows}", f"seed={seed}"])
    return build_world(instantiate(cfg.world)), cfg


def _replica(world, j: int, rows_left: int, noise: float, seed: int) -> dict[str, pl.DataFrame]:
    """Replica `j` of the world's impressions, candidates and scores (request and member ids
    shifted), cut to its first whole requests within `rows_left` impressions."""
    n_req = int(world.impressions["request_id"].max()) + 1
    n_mem = int(world.members["member_id"].max()) + 1
    keep = world.impressions.select(pl.col("request_id").unique(maintain_order=True)).head(
        rows_left // world.config.slate_size)
    shift = {"request_id": pl.col("request_id") + j * n_req}
    impressions = world.impressions.join(keep, on="request_id", how="semi").with_columns(
        **shift, member_id=pl.col("member_id") + j * n_mem)
    candidates = world.candidates.join(keep, on="request_id", how="semi").with_columns(**shift)
    rng = np.random.default_rng([seed, j])
    scores = candidates.select("request_id", "post_id", score="logging_score")
    return {"impressions": impressions, "candidates": candidates, "production": scores,
            "candidate": scores.with_columns(
                pl.col("score") + rng.normal(0.0, noise, scores.height))}


def write_files(out: Path, rows: int, world_rows: int, noise: float, seed: int) -> dict:
    """The files of a `rows`-impression log under `out`; returns their paths and the world's
    logging form (temperature, epsilon)."""
    world, cfg = _world(min(rows, world_rows), seed)
    paths = {name: out / name for name in SHARDED}
    for path in paths.values():
        path.mkdir(parents=True)
    n_copies = math.ceil(rows / world.impressions.height)
    for j in range(n_copies):
        part = _replica(world, j, rows - j * world.impressions.height, noise, seed)
        for name, frame in part.items():
            frame.write_parquet(paths[name] / f"part-{j:04d}.parquet")
    n_mem = int(world.members["member_id"].max()) + 1
    paths["members"] = out / "members.parquet"
    pl.concat([world.members.with_columns(member_id=pl.col("member_id") + j * n_mem)
               for j in range(n_copies)]).write_parquet(paths["members"])
    paths["posts"] = out / "posts.parquet"
    world.posts.write_parquet(paths["posts"])
    return {"paths": {k: str(v) for k, v in paths.items()}, "copies": n_copies,
            "members": n_copies * world.members.height, "posts": world.posts.height,
            "logging_temperature": cfg.world.logging_temperature,
            "logging_epsilon": cfg.world.logging_epsilon}


# --- the evaluation: what recsim-run data=logs runs ----------------------------------------


def _read_eagerly(path, what: str) -> pl.LazyFrame:
    """The baseline's reader: every column of every file in memory before anything else."""
    path = Path(path)
    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    return pl.read_parquet(files).lazy()


def evaluate(files: dict, out: Path, eager: bool, n_bootstrap: int, slate: bool,
             temperature: float = 0.0) -> dict:
    """recsim.jobs.run.run on the files with data=logs; the report and run() seconds."""
    from hydra import compose, initialize_config_dir

    from recsim.jobs.run import run
    from recsim.jobs.schemas import register
    from recsim.paths import CONF_DIR
    from recsim.world import files as reader

    if eager:
        reader.scan = _read_eagerly
    p = files["paths"]
    overrides = ["data=logs", *(f"data.{t}={p[t]}" for t in ("posts", "impressions", "members",
                                                             "candidates")),
                 f"sim.control.scores={p['production']}", f"sim.treatment.scores={p['candidate']}",
                 "sim.control.name=production", "sim.treatment.name=candidate",
                 f"sim.n_bootstrap={n_bootstrap}", f"sim.policy_temperature={temperature}"]
    if slate:
        overrides += [f"data.logging_temperature={files['logging_temperature']}",
                      f"data.logging_epsilon={files['logging_epsilon']}"]
    register("config")
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        cfg = compose("config", overrides=overrides)
    start = time.perf_counter()
    result = run(cfg, str(out))
    return {"run_seconds": time.perf_counter() - start, "timings": result["timings"]}


# --- the driver: one process per variant, its wall time and peak RSS -----------------------


def _child(args: argparse.Namespace, variant: str, workdir: Path) -> dict:
    """Run this script as `--variant` in a fresh process; its JSON answer, wall seconds and
    peak RSS (GB, from os.wait4: the child's own maximum resident set)."""
    answer = workdir / f"{variant}.json"
    cmd = [sys.executable, __file__, "--variant", variant, "--workdir", str(workdir),
           "--rows", str(args.rows), "--world-rows", str(args.world_rows),
           "--noise", str(args.noise), "--seed", str(args.seed),
           "--n-bootstrap", str(args.n_bootstrap), "--temperature", str(args.temperature),
           *(["--slate"] if args.slate else [])]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"variant {variant} failed (exit {proc.returncode}): {' '.join(cmd)}")
    return {**json.loads(answer.read_text()), "wall_seconds": seconds,
            "peak_rss_gb": usage.ru_maxrss * 1024 / 1e9}  # ru_maxrss: KiB on Linux


def _figures(report_dir: Path) -> list:
    """The run's lifts and estimates (as tests/test_logs.py compares runs)."""
    r = json.loads((report_dir / "report.json").read_text())
    return ([(x["estimator"], x["lift"], x["ci_low"], x["ci_high"]) for x in r["lifts"]]
            + [(e["policy"], e["name"], e["value"]) for e in r["estimates"]])


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def drive(args: argparse.Namespace, workdir: Path) -> None:
    written = _child(args, "write", workdir)
    runs = {v: _child(args, v, workdir) for v in ("lazy", "eager")}
    same = _figures(workdir / "report_lazy") == _figures(workdir / "report_eager")
    lazy_report = json.loads((workdir / "report_lazy" / "report.json").read_text())
    nan = float("nan")
    rows = [{"variant": "write files", "wall s": written["wall_seconds"], "run() s": nan,
             "read s": nan, "policies s": nan, "estimates s": nan,
             "peak RSS GB": written["peak_rss_gb"], "same figures": "-"}]
    for variant, r in runs.items():
        t = r["timings"]
        rows.append({"variant": f"data=logs, {variant}", "wall s": r["wall_seconds"],
                     "run() s": r["run_seconds"], "read s": t["1_data"],
                     "policies s": t["5_policies"], "estimates s": t["6_offline_estimates"],
                     "peak RSS GB": r["peak_rss_gb"], "same figures": str(same)})
    files_gb = _dir_bytes(workdir / "files") / 1e9
    extra = {"rows_in_log": args.rows, "world_rows": min(args.rows, args.world_rows),
             "copies": written["copies"], "members": written["members"],
             "posts": written["posts"], "files_gb": files_gb, "n_bootstrap": args.n_bootstrap,
             "sim": lazy_report["sim"],
             "slate_estimators": args.slate, "same_figures": same,
             "timings": {v: r["timings"] for v, r in runs.items()},
             "lifts": [{k: x[k] for k in ("estimator", "lift", "ci_low", "ci_high", "status")}
                       for x in lazy_report["lifts"]],
             "cpus": os.cpu_count()}
    report("bench_logs", rows, extra)
    print(f"{args.rows:,} impressions ({written['copies']} copies of a "
          f"{extra['world_rows']:,}-impression world, {written['members']:,} members), "
          f"{files_gb:.2f} GB of parquet; lazy {runs['lazy']['wall_seconds']:.0f} s, "
          f"{runs['lazy']['peak_rss_gb']:.2f} GB; eager {runs['eager']['wall_seconds']:.0f} s, "
          f"{runs['eager']['peak_rss_gb']:.2f} GB; same figures: {same}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="impressions in the log")
    parser.add_argument("--world-rows", type=int, default=1_000_000,
                        help="impressions of the world that is replicated to --rows")
    parser.add_argument("--noise", type=float, default=0.5,
                        help="std of the noise added to the logging score: the candidate policy")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-bootstrap", type=int, default=500)
    parser.add_argument("--temperature", type=float, default=0.0,
                        help="both policies' temperature (sim.policy_temperature): 0 top-N by "
                             "score; > 0 Plackett-Luce (the config's default is 0.5)")
    parser.add_argument("--slate", action="store_true",
                        help="declare the logging form: the whole-slate estimators run too")
    parser.add_argument("--keep", help="write the files and reports here and keep them")
    parser.add_argument("--variant", choices=("write", "lazy", "eager"), help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant is None:
        if args.keep:
            Path(args.keep).mkdir(parents=True, exist_ok=False)
            drive(args, Path(args.keep))
        else:
            with tempfile.TemporaryDirectory(prefix="bench_logs_") as tmp:
                drive(args, Path(tmp))
        return
    workdir = Path(args.workdir)
    if args.variant == "write":
        answer = write_files(workdir / "files", args.rows, args.world_rows, args.noise, args.seed)
        (workdir / "files.json").write_text(json.dumps(answer))
    else:
        files = json.loads((workdir / "files.json").read_text())
        answer = evaluate(files, workdir / f"report_{args.variant}", args.variant == "eager",
                          args.n_bootstrap, args.slate, args.temperature)
    (workdir / f"{args.variant}.json").write_text(json.dumps(answer))


if __name__ == "__main__":
    main()
