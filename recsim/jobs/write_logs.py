"""Write a synthetic world as a team's files, with two policies' score files: the worked example
of `recsim-run data=logs` (conf/data/logs.yaml), and what its tests and benchmarks read.

    python -m recsim.jobs.write_logs --out /tmp/feed --world debug
    python -m recsim.jobs.write_logs --out /tmp/feed --format csv --string-ids --position-base 0

Writes posts, members, impressions, candidates (recsim.world.logs.write_logs) and
scores/production and scores/candidate: the logging policy's own scores (the production ranker
that wrote the log) and the log of the user model's top-slot click probability (a candidate
ranker as good as any could be). `--eval-period` keeps only the requests a `data=world` run
evaluates (after ranker.train_fraction of the time), so both runs estimate the same requests
and the world's run adds the truth.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import polars as pl
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from recsim.paths import CONF_DIR
from recsim.world.logs import write_logs
from recsim.world.timeline import time_split
from recsim.world.world import World, build_world

log = logging.getLogger(__name__)


def score_files(world: World, out: Path, fmt: str, string_ids: bool) -> dict[str, Path]:
    """scores/production (the logging scores) and scores/candidate (log true click probability
    at the top slot), per (request_id, post_id) of the world's candidates."""
    rows = world.candidates.join(
        world.impressions.filter(pl.col("position") == 1).select(
            "request_id", "member_id", "timestamp", position=pl.lit(1, dtype=pl.Int32)),
        on="request_id")
    oracle = world.truth.expected_outcomes(rows).select(
        "request_id", "post_id", score=pl.col("p_click").log())
    request = (pl.format("r{}", pl.col("request_id").cast(pl.String).str.zfill(9))
               if string_ids else pl.col("request_id"))
    (out / "scores").mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, frame in {"production": rows.select("request_id", "post_id", score="logging_score"),
                        "candidate": oracle}.items():
        paths[name] = out / "scores" / f"{name}.{fmt}"
        frame = frame.with_columns(request_id=request)
        if fmt == "csv":
            frame.write_csv(paths[name])
        else:
            frame.write_parquet(paths[name])
    return paths


def eval_period(world: World, train_fraction: float) -> World:
    """The world with only the requests after `train_fraction` of the time (what a data=world
    run evaluates): its impressions and candidates."""
    test = time_split(world.impressions, train_fraction).test
    keep = test.select("request_id").unique()
    return World(world.config, world.posts, world.members, world.authors,
                 world.candidates.join(keep, on="request_id", how="semi"), test, world.truth)


def main(argv: list[str] | None = None) -> dict[str, Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--world", default="debug", help="a conf/world/ option")
    parser.add_argument("--format", default="parquet", choices=("parquet", "csv"))
    parser.add_argument("--string-ids", action="store_true")
    parser.add_argument("--position-base", type=int, default=1, choices=(0, 1))
    parser.add_argument("--eval-period", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from recsim.jobs.schemas import register

    register("config")
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        cfg = compose("config", overrides=[f"world={args.world}"])
    world = build_world(instantiate(cfg.world))
    if args.eval_period:
        world = eval_period(world, cfg.ranker.train_fraction)
    out = Path(args.out)
    paths = write_logs(world, out, args.format, args.string_ids, args.position_base)
    paths |= score_files(world, out, args.format, args.string_ids)
    log.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    return paths


if __name__ == "__main__":
    main()
