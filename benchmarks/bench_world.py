"""World generation at scale: 1M impressions for 100k members (target: under 60 s).

Also times the vectorised slate sampler against a straightforward per-request Python loop
of the same logging policy, on the same scores, in the same process.

    .venv/bin/python benchmarks/bench_world.py [--members 100000 --impressions 1000000]
"""

from __future__ import annotations

import argparse
import logging

import numpy as np

from _common import report, timed
from recsim.world.corpus import load_corpus
from recsim.world.slates import sample_slates, slot_probabilities
from recsim.world.world import WorldConfig, build_world, logging_policy


def loop_slates(cfg: WorldConfig, rng: np.random.Generator, scores: np.ndarray):
    """Baseline: the same Plackett-Luce-with-exploration sampler, one request at a time."""
    chosen = np.empty((len(scores), cfg.slate_size), dtype=np.int64)
    for r, row in enumerate(scores):
        available = np.ones(len(row), dtype=bool)
        for slot in range(cfg.slate_size):
            probs = slot_probabilities(row[None], available[None], cfg.logging_temperature,
                                       cfg.logging_epsilon)[0]
            pick = rng.choice(len(row), p=probs)
            chosen[r, slot] = pick
            available[pick] = False
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--impressions", type=int, default=1_000_000)
    parser.add_argument("--baseline-requests", type=int, default=5_000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    cfg = WorldConfig(n_members=args.members, n_impressions=args.impressions,
                      n_authors=5_000, max_posts_per_source=20_000)
    corpus, t_corpus = timed(load_corpus, cfg.corpus_sources, cfg.max_posts_per_source)
    world, t_world = timed(build_world, cfg, corpus)

    scores = np.random.default_rng(0).standard_normal((args.baseline_requests, cfg.n_candidates))
    _, t_vec = timed(sample_slates, logging_policy(cfg), scores, cfg.slate_size,
                     np.random.default_rng(1))
    _, t_loop = timed(loop_slates, cfg, np.random.default_rng(1), scores)

    rows = [
        {"step": "load corpus", "rows": corpus.height, "seconds": t_corpus},
        {"step": "build world", "rows": world.impressions.height, "seconds": t_world},
        {"step": f"slate sampler, vectorised ({args.baseline_requests} req)",
         "rows": args.baseline_requests * cfg.slate_size, "seconds": t_vec},
        {"step": f"slate sampler, per-request loop ({args.baseline_requests} req)",
         "rows": args.baseline_requests * cfg.slate_size, "seconds": t_loop},
    ]
    total = t_corpus + t_world
    extra = {"members": args.members, "impressions": world.impressions.height,
             "total_seconds": total, "target_seconds": 60, "target_met": total < 60,
             "sampler_speedup_vs_loop": t_loop / t_vec}
    report("world", rows, extra)
    print(f"total {total:.1f} s for {world.impressions.height:,} impressions "
          f"(target < 60 s: {'met' if total < 60 else 'NOT met'}); "
          f"slate sampler {t_loop / t_vec:.0f}x the per-request loop")


if __name__ == "__main__":
    main()
