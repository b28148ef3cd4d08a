"""Off-policy estimators with one contract.

An estimator is a function from a polars frame of logged rows to per-row contribution *terms*,
plus a `combine` that maps the terms' totals to a value (most: sum(num) / sum(den)). One shared
routine (recsim/bootstrap.py) turns the terms into an `Estimate(name, value, ci_low, ci_high, n,
diagnostics)` with a Poisson bootstrap over members. Input columns, one row per logged decision
(or, for the slate estimators, one row per shown slot):

    member_id          the bootstrap cluster (members are resampled, not impressions)
    propensity         logging policy's probability of the logged action, in (0, 1]; for slates,
                       of the logged post at its slot given the earlier slots
    target_prob        evaluation policy's probability of the same action (same conditioning)
    reward             the observed outcome (recsim/rewards.py: click, engagement, dwell, ...)
    reward_hat         DM / DR / SNDR: a reward model's prediction for the logged action
    target_reward_hat  DM / DR / SNDR: the model's expected reward under the evaluation policy,
                       sum over actions a of target(a) * reward_hat(a)
    request_id, position, logging_marginal, target_marginal
                       slate estimators: the request, the slot, and each policy's probability
                       of the logged post at that slot, marginal over the earlier slots
    logging_exposure, target_exposure
                       pbm: each policy's sum_j beta_j * marginal of the logged post at slot j,
                       with examination weights beta from the log (recsim/ope/slate_pbm.py)
    unsupported_mass   optional: the evaluation policy's mass, in this decision, on actions the
                       logging policy never shows (IPS cannot see them; reported, not hidden)

Estimators (value per decision; w = target_prob / propensity):

    replay       rejection sampling (Li et al. 2011), Rao-Blackwellised: sum(pi r) / sum(pi);
                 unbiased only when the logging policy is uniform over the candidates
    ips          mean(w r)
    clipped_ips  mean(min(w, 10) r): less variance, biased down where weights exceed 10
    snips        sum(w r) / sum(w): bounded by the reward range
    dm           mean(target_reward_hat): as good as the reward model; its interval holds
                 the model fixed, so it is too narrow (the model's own error is not in it)
    dr           mean(target_reward_hat + w (r - reward_hat))
    sndr         mean(target_reward_hat) + sum(w (r - reward_hat)) / sum(w)
    iips         slate, per request: sum_k (target_marginal_k / logging_marginal_k) r_k;
                 unbiased when a slot's reward depends only on its post and position
                 (position-based click model; Li et al. 2018)
    rips         slate, per request: sum_k (prod_{j<=k} target_prob_j / propensity_j) r_k;
                 unbiased when a slot's reward depends on the slots above it and not below
                 (cascade-like; McInerney et al. 2020); uses the logged conditional propensities
    pbm          slate, per request: sum_k (target_exposure_k / logging_exposure_k) r_k: a
                 logged post counts at whatever slot either policy puts it; unbiased under a
                 position-based model (Li et al. 2018, their PBM estimator)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
import numpy as np
import polars as pl

from recsim.ope.bootstrap import (ClusterSums, Combine, Estimate, cluster_sums, finish,
                              percentile_interval, ratio, replicate)

__all__ = ["Estimate", "Estimator", "ESTIMATORS", "Bootstrap", "check_decisions",
           "summarize", "finish_all", "evaluate", "estimate", "percentile_interval"]

log = logging.getLogger(__name__)

CLIP_WEIGHT = 10.0
_w = pl.col("target_prob") / pl.col("propensity")
_first_slot = (pl.col("position") == pl.col("position").min().over("request_id")).cast(pl.Float64)


def _sndr(t: dict[str, np.ndarray]) -> np.ndarray:
    return t["dm"] / t["one"] + t["corr"] / t["w"]


@dataclass(frozen=True)
class Estimator:
    """terms: contribution columns as expressions over the input rows; combine: term totals ->
    value; weight / decision: the importance weight and the decision count, for diagnostics;
    needs: the input columns it reads."""

    name: str
    terms: dict[str, pl.Expr]
    needs: tuple[str, ...]
    combine: Combine = ratio
    weight: pl.Expr = _w
    decision: pl.Expr = pl.lit(1.0)


BASE = ("member_id", "propensity", "target_prob", "reward")
MODEL = BASE + ("reward_hat", "target_reward_hat")
SLATE = ("request_id", "position")
one = pl.lit(1.0)
_r, _q, _q_pi = pl.col("reward"), pl.col("reward_hat"), pl.col("target_reward_hat")
_w_marginal = pl.col("target_marginal") / pl.col("logging_marginal")
_w_prefix = _w.cum_prod().over("request_id", order_by="position")
_w_exposure = pl.col("target_exposure") / pl.col("logging_exposure")

ESTIMATORS: dict[str, Estimator] = {e.name: e for e in (
    Estimator("replay", {"num": pl.col("target_prob") * _r, "den": pl.col("target_prob")}, BASE),
    Estimator("ips", {"num": _w * _r, "den": one}, BASE),
    Estimator("clipped_ips", {"num": _w.clip(upper_bound=CLIP_WEIGHT) * _r, "den": one}, BASE),
    Estimator("snips", {"num": _w * _r, "den": _w}, BASE),
    Estimator("dm", {"num": _q_pi, "den": one}, MODEL),
    Estimator("dr", {"num": _q_pi + _w * (_r - _q), "den": one}, MODEL),
    Estimator("sndr", {"dm": _q_pi, "one": one, "corr": _w * (_r - _q), "w": _w}, MODEL, _sndr),
    Estimator("iips", {"num": _w_marginal * _r, "den": _first_slot},
              BASE + SLATE + ("logging_marginal", "target_marginal"),
              weight=_w_marginal, decision=_first_slot),
    Estimator("rips", {"num": _w_prefix * _r, "den": _first_slot}, BASE + SLATE,
              weight=_w_prefix, decision=_first_slot),
    Estimator("pbm", {"num": _w_exposure * _r, "den": _first_slot},
              BASE + SLATE + ("logging_exposure", "target_exposure"),
              weight=_w_exposure, decision=_first_slot),
)}

SLATE_ESTIMATORS = ("iips", "rips", "pbm")


def _check_finite(frame: pl.DataFrame, source: str, needs: tuple[str, ...]) -> None:
    """ValueError naming the column and its first rows for NaN / inf in a float column the
    estimators read (reward, propensity, target_prob, reward_hat, ...): a NaN there would make
    the estimate NaN without a word."""
    for col in (c for c in needs if frame.schema[c].is_float()):
        bad = frame.select(pl.int_range(pl.len()).alias("_row"), col).filter(~pl.col(col).is_finite())
        if bad.height:
            raise ValueError(f"{source}: column '{col}': {bad.height} non-finite value(s) (NaN or "
                             f"inf) at row(s) {bad['_row'].head(3).to_list()} (first: "
                             f"{bad[col].head(3).to_list()}); {col} must be finite")


def check_decisions(frame: pl.DataFrame, source: str = "decisions",
                    needs: tuple[str, ...] = BASE) -> pl.DataFrame:
    """Clear errors for what would silently give a wrong number."""
    missing = [c for c in needs if c not in frame.columns]
    if missing:
        raise ValueError(f"{source}: missing column(s) {missing}")
    if frame.height == 0:
        raise ValueError(f"{source}: no logged decisions to evaluate (empty log)")
    nulls = [c for c in needs if frame[c].null_count()]
    if nulls:
        raise ValueError(f"{source}: null values in column(s) {nulls}")
    _check_finite(frame, source, needs)
    for col in ("propensity", "logging_marginal"):
        if col in needs:
            bad = frame.filter((pl.col(col) <= 0) | (pl.col(col) > 1) | pl.col(col).is_nan())
            if bad.height:
                raise ValueError(f"{source}: column '{col}': {bad.height} values outside (0, 1] "
                                 f"(first: {bad[col][0]}); {col} must be in (0, 1]")
    for col in ("target_prob", "target_marginal"):
        if col in needs:
            bad = frame.filter((pl.col(col) < 0) | (pl.col(col) > 1) | pl.col(col).is_nan())
            if bad.height:
                raise ValueError(f"{source}: column '{col}': {bad.height} values outside [0, 1] "
                                 f"(first: {bad[col][0]})")
    return frame


def _all_terms(est: Estimator, frame: pl.DataFrame) -> dict[str, pl.Expr]:
    unsupported = (pl.col("unsupported_mass").fill_null(0.0) if "unsupported_mass" in frame.columns
                   else pl.lit(0.0))
    return {**est.terms, "_w": est.weight, "_w2": est.weight ** 2,
            "_unsupported": unsupported * est.decision, "_decisions": est.decision}


def summarize(names: list[str], frame: pl.DataFrame, source: str = "decisions"
              ) -> tuple[ClusterSums, dict[str, dict[str, str]], dict[str, float]]:
    """Check `frame`, compute the terms of every estimator in `names` and sum them per member.

    This is the only step that reads rows (shards of a log run it separately). Terms that
    several estimators share (w * r, the weights, ...) are computed and summed once. Returns the
    per-member sums, each estimator's {term: column of the sums}, and its largest weight.
    """
    unknown = [n for n in names if n not in ESTIMATORS]
    if unknown:
        raise ValueError(f"unknown estimator(s) {unknown}; choose from {list(ESTIMATORS)}")
    needs = tuple(dict.fromkeys(c for n in names for c in ESTIMATORS[n].needs))
    check_decisions(frame, source, needs)
    distinct: dict[str, tuple[str, pl.Expr]] = {}  # expression text -> (column, expression)
    columns: dict[str, dict[str, str]] = {}
    for name in names:
        columns[name] = {}
        for term, expr in _all_terms(ESTIMATORS[name], frame).items():
            col, _ = distinct.setdefault(str(expr), (f"t{len(distinct)}", expr))
            columns[name][term] = col
    terms = frame.select(**{col: expr for col, expr in distinct.values()})
    max_weight = {n: float(terms[columns[n]["_w"]].max()) for n in names}
    return cluster_sums(terms, frame["member_id"]), columns, max_weight


def finish_all(cs: ClusterSums, columns: dict[str, dict[str, str]], max_weight: dict[str, float],
               boot: "Bootstrap", alpha: float | None = None) -> dict[str, tuple[Estimate, np.ndarray]]:
    """One bootstrap draw for all estimators; each gets its Estimate and [B] replicate values."""
    point, reps = replicate(cs, boot.n_boot, boot.seed)
    index = {t: i for i, t in enumerate(cs.terms)}
    out = {}
    for name, cols in columns.items():
        idx = [index[c] for c in cols.values()]
        mine = ClusterSums(cs.ids, cs.sums[:, idx], tuple(cols), cs.n_rows, max_weight[name])
        out[name] = finish(name, mine, ESTIMATORS[name].combine, boot.n_boot, boot.seed,
                           boot.alpha if alpha is None else alpha,
                           replicated=(point[idx], reps[:, idx]), interval=boot.interval)
    return out


@dataclass(frozen=True)
class Bootstrap:
    """How intervals are drawn: B Poisson(1) replicates over members, seeded; 1 - alpha level.

    interval: "percentile" (the default: today's numbers), "studentized" or "bca"
    (recsim/ope/intervals.py; same replicates, second-order corrections).
    """

    n_boot: int = 500
    seed: int = 0
    alpha: float = 0.05
    interval: str = "percentile"

    def __post_init__(self):
        if self.interval not in ("percentile", "studentized", "bca"):
            raise ValueError(f"Bootstrap.interval must be 'percentile', 'studentized' or 'bca', "
                             f"not {self.interval!r}")


def evaluate(names: list[str], frame: pl.DataFrame, boot: Bootstrap, alpha: float | None = None,
             source: str = "decisions") -> dict[str, tuple[Estimate, np.ndarray]]:
    """Run several estimators on `frame` with one bootstrap draw: name -> (Estimate, replicates)."""
    cs, columns, max_weight = summarize(list(names), frame, source)
    return finish_all(cs, columns, max_weight, boot, alpha)


def estimate(name: str, frame: pl.DataFrame, boot: Bootstrap, alpha: float | None = None,
             source: str = "decisions") -> tuple[Estimate, np.ndarray]:
    """Run estimator `name` on `frame`; return its Estimate and [B] bootstrap replicate values."""
    return evaluate([name], frame, boot, alpha, source)[name]
