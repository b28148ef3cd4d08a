"""Offline estimation at scale: a 10M-row log, five estimators, 200 bootstrap replicates
(target: under 30 s, and at least 20x a straightforward numpy bootstrap in the same script).

Ours: recsim.ope.estimators.evaluate: per-row terms in polars, summed per member, then one
member-clustered Poisson bootstrap for all five estimators ([G, B] counts times [G, T] sums).
Baseline: resample the rows with replacement per replicate and recompute each estimator on the
resampled arrays (the textbook bootstrap, over rows; it is also the less correct one for logs
with repeated members).

    .venv/bin/python benchmarks/bench_estimators.py [--rows 10000000 --members 1000000]
        [--baseline-replicates 200]   # fewer: the baseline time is scaled to 200 replicates
"""

from __future__ import annotations

import argparse
import logging

import numpy as np
import polars as pl

from _common import report, timed
from recsim.ope.estimators import Bootstrap, evaluate

NAMES = ["ips", "clipped_ips", "snips", "dm", "dr"]


def synthetic_log(n_rows: int, n_members: int, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    propensity = rng.uniform(0.02, 1.0, n_rows)
    target = rng.uniform(0.0, 1.0, n_rows)
    reward_hat = rng.uniform(0.0, 0.2, n_rows)
    return pl.DataFrame({
        "member_id": rng.integers(0, n_members, n_rows),
        "propensity": propensity,
        "target_prob": target,
        "reward": (rng.random(n_rows) < reward_hat).astype(np.float64),
        "reward_hat": reward_hat,
        "target_reward_hat": reward_hat * 1.1,
    })


def numpy_bootstrap(frame: pl.DataFrame, n_boot: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Baseline: per replicate, draw n row indices with replacement and recompute every estimator."""
    cols = {c: frame[c].to_numpy() for c in frame.columns}
    n = frame.height
    rng = np.random.default_rng(seed)
    out = {name: np.empty(n_boot) for name in NAMES}
    for b in range(n_boot):
        idx = rng.integers(0, n, n)
        w = cols["target_prob"][idx] / cols["propensity"][idx]
        r, q, q_pi = cols["reward"][idx], cols["reward_hat"][idx], cols["target_reward_hat"][idx]
        out["ips"][b] = np.mean(w * r)
        out["clipped_ips"][b] = np.mean(np.minimum(w, 10.0) * r)
        out["snips"][b] = np.sum(w * r) / np.sum(w)
        out["dm"][b] = np.mean(q_pi)
        out["dr"][b] = np.mean(q_pi + w * (r - q))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--replicates", type=int, default=200)
    parser.add_argument("--baseline-replicates", type=int, default=200)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    frame, t_make = timed(synthetic_log, args.rows, args.members)
    boot = Bootstrap(args.replicates, seed=0)
    evaluate(NAMES, frame.head(1000), boot)  # warm-up (imports, polars thread pool)
    ours, t_ours = timed(evaluate, NAMES, frame, boot)
    _, t_base = timed(numpy_bootstrap, frame, args.baseline_replicates)
    t_base_full = t_base * args.replicates / args.baseline_replicates

    rows = [{"method": f"recsim: member Poisson bootstrap ({args.replicates} reps)",
             "seconds": t_ours},
            {"method": f"numpy: row resampling ({args.baseline_replicates} reps, measured)",
             "seconds": t_base}]
    if args.baseline_replicates != args.replicates:
        rows.append({"method": f"numpy: row resampling, scaled to {args.replicates} reps",
                     "seconds": t_base_full})
    for name in NAMES:
        est = ours[name][0]
        rows.append({"method": f"  {name}", "seconds": float("nan"),
                     "value": est.value, "ci": f"[{est.ci_low:.5f}, {est.ci_high:.5f}]"})
    for r in rows:
        r.setdefault("value", float("nan"))
        r.setdefault("ci", "")
    speedup = t_base_full / t_ours
    extra = {"rows_in_log": args.rows, "members": args.members, "estimators": NAMES,
             "replicates": args.replicates, "baseline_replicates": args.baseline_replicates,
             "seconds": t_ours, "baseline_seconds_for_all_replicates": t_base_full,
             "speedup": speedup, "target_seconds": 30, "target_speedup": 20,
             "make_log_seconds": t_make}
    report("estimators", rows, extra)
    print(f"{args.rows:,} rows, {len(NAMES)} estimators, {args.replicates} replicates: "
          f"{t_ours:.1f} s (target <= 30 s: {'met' if t_ours <= 30 else 'NOT met'}); "
          f"{speedup:.0f}x the numpy row bootstrap (target >= 20x: "
          f"{'met' if speedup >= 20 else 'NOT met'})")


if __name__ == "__main__":
    main()
