"""The one shared routine of every estimator: per-row contributions -> Estimate with an interval.

An estimator (recsim/estimators.py) turns logged rows into contribution *terms* (columns such as
`num` and `den`) and says how term totals combine into a value (`num / den` for most). This
module does the rest, the same way for all of them:

    1. `cluster_sums`: sum each term per member (the bootstrap cluster). Rows never leave this step:
       a log of 10M rows becomes a [G, T] table for G members and T terms. Shards of a log that
       is split *by member* give disjoint tables; `concat_sums` joins them (recsim/distributed.py).
    2. `replicate`: a Poisson(1) bootstrap over members. Each member gets one Poisson(1) count
       per replicate, drawn from a counter-based hash of (seed, member_id, replicate): the same
       member gets the same counts whichever shard or process holds it, so a sharded run gives
       the very numbers of a single-process run. Replicate totals are counts.T @ sums, [B, T],
       computed in member chunks (memory stays O(chunk x B)).
    3. `finish`: the point value, a percentile interval from the replicates (none, and a
       warning, when a replicate is NaN / inf: `percentile_interval`), and diagnostics.

Why Poisson and not multinomial: the replicate of a member does not depend on how many other
members there are, so it is vectorised, streamable and shardable (Chamandy et al. 2012).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import polars as pl

# Poisson(1) CDF for k = 0..19; the tail beyond 19 has probability < 1e-18.
_POISSON1_CDF = np.cumsum([math.exp(-1) / math.factorial(k) for k in range(20)])
_POISSON1_TABLE = np.searchsorted(_POISSON1_CDF, (np.arange(1 << 16) + 0.5) / (1 << 16),
                                  side="right").astype(np.uint8)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_CHUNK = 1 << 15  # members per chunk when drawing counts

log = logging.getLogger(__name__)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """A bijective 64-bit mix (Steele et al.); wraps around on purpose."""
    with np.errstate(over="ignore"):
        z = x + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def poisson_counts(cluster_ids: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """[G, B] Poisson(1) counts, a pure function of (seed, cluster id, replicate index).

    One 64-bit hash gives four 16-bit uniforms; each indexes an inverse-CDF table of Poisson(1)
    (probabilities resolved to 2**-16, far below bootstrap noise).
    """
    ids = np.asarray(cluster_ids).astype(np.int64).view(np.uint64)
    n_words = -(-n_boot // 4)
    with np.errstate(over="ignore"):
        base = splitmix64(ids ^ splitmix64(np.uint64(seed) * _GOLDEN))
        h = splitmix64(base[:, None] + np.arange(n_words, dtype=np.uint64)[None, :] * _GOLDEN)
    u16 = h.astype("<u8", copy=False).view("<u2").reshape(len(ids), 4 * n_words)[:, :n_boot]
    return _POISSON1_TABLE[u16]


@dataclass(frozen=True)
class ClusterSums:
    """Per-cluster totals of each term: everything the bootstrap needs from the rows.

    ids:    [G] sorted cluster ids (member ids)
    sums:   [G, T] totals of each term per cluster, columns named by `terms`
    n_rows: how many rows were summed
    max_weight: the largest importance weight among them (diagnostic; not additive, but max-able)
    """

    ids: np.ndarray
    sums: np.ndarray
    terms: tuple[str, ...]
    n_rows: int
    max_weight: float = float("nan")


def cluster_sums(terms: pl.DataFrame, clusters: pl.Series | np.ndarray,
                 max_weight: float = float("nan")) -> ClusterSums:
    """Sum every column of `terms` per cluster (rows in the same order as `clusters`).

    np.bincount adds each cluster's rows in row order: deterministic, so a shard that keeps
    its members' rows in order reproduces these sums bit for bit.
    """
    ids = np.asarray(clusters.to_numpy() if isinstance(clusters, pl.Series) else clusters)
    ids = ids.astype(np.int64, copy=False)
    if ids.size and ids.min() >= 0 and ids.max() < 4 * ids.size + 1024:  # ids index directly
        present = np.flatnonzero(np.bincount(ids))
        sums = np.stack([np.bincount(ids, terms[c].cast(pl.Float64).to_numpy())[present]
                         for c in terms.columns], axis=1)
        return ClusterSums(present, sums, tuple(terms.columns), terms.height, max_weight)
    uniq, codes = np.unique(ids, return_inverse=True)
    sums = np.stack([np.bincount(codes, terms[c].cast(pl.Float64).to_numpy(), minlength=len(uniq))
                     for c in terms.columns], axis=1)
    return ClusterSums(uniq, sums, tuple(terms.columns), terms.height, max_weight)


def concat_sums(parts: list[ClusterSums]) -> ClusterSums:
    """Join the sums of shards that hold disjoint sets of clusters (a log split by member)."""
    ids = np.concatenate([p.ids for p in parts])
    order = np.argsort(ids, kind="stable")
    if len(ids) > 1 and (np.diff(ids[order]) == 0).any():
        raise ValueError("concat_sums: a member appears in more than one shard; shard by member")
    terms = parts[0].terms
    if any(p.terms != terms for p in parts):
        raise ValueError("concat_sums: shards have different terms")
    return ClusterSums(ids[order], np.concatenate([p.sums for p in parts])[order], terms,
                       sum(p.n_rows for p in parts), max(p.max_weight for p in parts))


def replicate(cs: ClusterSums, n_boot: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Point totals [T] and Poisson-bootstrap replicate totals [B, T]."""
    reps = np.zeros((n_boot, cs.sums.shape[1]))
    for start in range(0, len(cs.ids), _CHUNK):
        chunk = slice(start, start + _CHUNK)
        counts = poisson_counts(cs.ids[chunk], n_boot, seed).astype(np.float64)
        reps += counts.T @ cs.sums[chunk]
    return cs.sums.sum(axis=0), reps


Combine = Callable[[dict[str, np.ndarray]], np.ndarray]


def ratio(t: dict[str, np.ndarray]) -> np.ndarray:
    """The value of most estimators: sum(num) / sum(den)."""
    return t["num"] / t["den"]


def count_nonfinite(replicates: np.ndarray) -> int:
    """How many replicate values are NaN or +-inf."""
    return int(np.count_nonzero(~np.isfinite(np.asarray(replicates, dtype=np.float64))))


def percentile_interval(replicates: np.ndarray, alpha: float,
                        name: str = "replicates") -> tuple[float, float]:
    """The (alpha / 2, 1 - alpha / 2) quantiles of the [B] replicate values.

    Any non-finite replicate (a resample whose statistic does not exist, e.g. a ratio whose
    denominator resampled to 0) makes the interval (nan, nan), with a warning naming `name`
    and the count: dropping those resamples would quietly condition the interval on the ones
    that happened to work, and narrow it. Callers record the count (Estimate.n_nonfinite,
    ab.Lift.n_nonfinite).
    """
    replicates = np.asarray(replicates, dtype=np.float64)
    bad = count_nonfinite(replicates)
    if bad:
        log.warning("%s: %d of %d bootstrap replicates are not finite (NaN or inf); "
                    "its interval is (nan, nan)", name, bad, replicates.size)
    if bad or replicates.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(replicates, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


@dataclass(frozen=True)
class Estimate:
    name: str
    value: float
    ci_low: float
    ci_high: float
    n: int
    diagnostics: dict = field(default_factory=dict)
    n_nonfinite: int = 0  # bootstrap replicates that were NaN / inf (interval then (nan, nan))


def weight_diagnostics(totals: dict[str, float], n_rows: int, max_weight: float) -> dict:
    """Effective sample size, max / mean weight, and the evaluation policy's unsupported mass.

    Needs the diagnostic terms `_w`, `_w2`, `_unsupported` and `_decisions` among the totals.
    """
    w, w2, decisions = totals["_w"], totals["_w2"], totals["_decisions"]
    return {
        "effective_sample_size": float(w * w / w2) if w2 > 0 else 0.0,
        "max_weight": float(max_weight),
        "mean_weight": float(w / n_rows) if n_rows else float("nan"),
        "unsupported_mass": float(totals["_unsupported"] / decisions) if decisions else 0.0,
        "n_rows": int(n_rows),
    }


def finish(name: str, cs: ClusterSums, combine: Combine, n_boot: int, seed: int,
           alpha: float = 0.05, n: int | None = None,
           replicated: tuple[np.ndarray, np.ndarray] | None = None,
           interval: str = "percentile") -> tuple[Estimate, np.ndarray]:
    """Estimate(name, value, interval, n, diagnostics) and the [B] replicate values.

    `replicated`: (point [T], replicates [B, T]) already drawn for cs's terms (several estimators
    replicated together draw the counts once). `interval`: "percentile" (default), or
    "studentized" / "bca" from recsim/ope/intervals.py (same counts; the replicate values
    returned are the same either way).
    """
    point, reps = replicate(cs, n_boot, seed) if replicated is None else replicated
    with np.errstate(invalid="ignore", divide="ignore"):
        value = float(combine(dict(zip(cs.terms, point))))
        values = combine({t: reps[:, i] for i, t in enumerate(cs.terms)})
    if interval == "percentile":
        lo, hi = percentile_interval(values, alpha, name)
    else:  # hook: second-order intervals live in recsim/ope/intervals.py
        from recsim.ope.intervals import bootstrap_interval

        other = bootstrap_interval(interval, cs, combine, n_boot, seed, alpha)
        lo, hi = other.low, other.high
    totals = dict(zip(cs.terms, point.tolist()))
    decisions = int(round(totals.get("_decisions", cs.n_rows)))
    diag = weight_diagnostics(totals, cs.n_rows, cs.max_weight) if "_w" in totals else {}
    diag["n_members"] = int(len(cs.ids))
    if interval != "percentile":
        diag["interval"] = interval
    return (Estimate(name, value, lo, hi, decisions if n is None else n, diag,
                     count_nonfinite(values)), values)
