"""Beyond one machine: shard a log by member across Ray tasks and combine per-shard statistics.

Each task runs the plain `recsim.ope.estimators.summarize` on its shard: rows become per-member sums
of every estimator's terms. The driver joins the shards' member tables (`concat_sums`) and
draws the bootstrap once (`finish_all`). A member's rows all sit in one shard, in their log
order, and its Poisson counts depend only on (seed, member_id, replicate), so the numbers are
exactly those of a single-process `evaluate` with the same seed, bit for bit.

    from recsim.ope.distributed import evaluate_on_ray
    results = evaluate_on_ray(["ips", "snips"], frame, Bootstrap(500, seed=0), n_shards=8)

Start Ray first (`ray.init(address=...)`) to use a cluster; otherwise a local one is started.
"""

from __future__ import annotations

import logging

import numpy as np
import polars as pl
import ray

from recsim.ope.bootstrap import Estimate, concat_sums
from recsim.ope.estimators import Bootstrap, finish_all, summarize

log = logging.getLogger(__name__)


def shard_by_member(frame: pl.DataFrame, n_shards: int) -> list[pl.DataFrame]:
    """Split rows by a hash of member_id; each shard keeps its rows in log order."""
    if n_shards < 1:
        raise ValueError(f"n_shards must be >= 1, got {n_shards}")
    shard = frame["member_id"].hash(seed=0) % n_shards
    return [frame.filter(shard == k) for k in range(n_shards)]


@ray.remote
def _summarize_shard(names: list[str], shard: pl.DataFrame, source: str):
    return summarize(names, shard, source)


def evaluate_on_ray(names: list[str], frame: pl.DataFrame, boot: Bootstrap,
                    alpha: float | None = None, source: str = "decisions", *,
                    n_shards: int) -> dict[str, tuple[Estimate, np.ndarray]]:
    """`recsim.ope.estimators.evaluate`, with the row work spread over `n_shards` Ray tasks
    (the same positional arguments: recsim.ope.ab.offline_lifts calls either)."""
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    shards = [s for s in shard_by_member(frame, n_shards) if s.height]
    if not shards:
        raise ValueError(f"{source}: no logged decisions to evaluate (empty log)")
    parts = ray.get([_summarize_shard.remote(list(names), s, f"{source} shard {k}")
                     for k, s in enumerate(shards)])
    columns = parts[0][1]
    if any(p[1] != columns for p in parts):
        raise ValueError(f"{source}: shards computed different terms (mixed input columns?)")
    max_weight = {n: max(p[2][n] for p in parts) for n in names}
    log.info("%s: %d rows summed in %d shards", source, frame.height, len(shards))
    return finish_all(concat_sums([p[0] for p in parts]), columns, max_weight, boot, alpha)
