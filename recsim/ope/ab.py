"""The A/B comparison: relative lift of treatment over control, offline and in truth.

Offline: both policies are evaluated on the *same* logged decisions with the *same* bootstrap
counts (a member's Poisson counts depend only on the seed and the member), so the lift's
interval and p-value are paired. Segments (new vs tenured members, activity terciles) repeat
the comparison on subsets, with Holm-corrected p-values and Bonferroni-level intervals. The
minimum detectable effect says how large a lift this log could detect at all.

Truth: both policies' action distributions are served to the world's user model, whose
expected engagement gives the true online values and lift.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import polars as pl

from recsim.ope.bootstrap import count_nonfinite
from recsim.ope.estimators import Bootstrap, Estimate, evaluate, percentile_interval
from recsim.world import rewards
from recsim.world.user_model import UserModel


@dataclass(frozen=True)
class Lift:
    """A paired relative lift with its bootstrap summary (lift_from_replicates)."""

    estimator: str
    control: Estimate
    treatment: Estimate
    lift: float  # treatment / control - 1
    ci_low: float
    ci_high: float
    p_value: float  # two-sided, from the bootstrap distribution of the lift
    std_error: float = float("nan")  # bootstrap standard deviation of the lift
    mde: float = float("nan")  # minimum detectable relative lift (alpha, 80% power)
    n_nonfinite: int = 0  # lift replicates that were NaN / inf (then no interval, p, SE, MDE)


def _check_same_requests(control: pl.DataFrame, treatment: pl.DataFrame) -> None:
    if control.height != treatment.height:
        raise ValueError("control and treatment must be evaluated on the same logged decisions "
                         f"({control.height} vs {treatment.height} rows)")
    key = [c for c in ("request_id", "position") if c in control.columns and c in treatment.columns]
    if key and not control.select(key).equals(treatment.select(key)):
        differ = control.select(key).join(treatment.select(key), on=key, how="anti")
        first = differ[key[0]].unique(maintain_order=True).head(3).to_list()
        raise ValueError("control and treatment must be evaluated on the same logged decisions: "
                         f"{differ[key[0]].n_unique()} request(s) of control are not in treatment "
                         f"(first: {first})")


def lift_from_replicates(name: str, c: Estimate, t: Estimate, c_reps: np.ndarray,
                         t_reps: np.ndarray, alpha: float, power: float = 0.8,
                         interval: tuple[float, float] | None = None) -> Lift:
    """Paired relative lift from the two policies' replicate values (same bootstrap counts).

    The replicate lifts are L_b = t_b / c_b - 1 [B]. From them:
        interval     the percentile interval at level alpha (bootstrap.percentile_interval)
        p_value      two-sided, 2 * min(share of L_b <= 0, share of L_b >= 0), capped at 1: the
                     smallest alpha whose percentile interval excludes 0
        std_error    the standard deviation of L_b (ddof 1), already relative to control
        mde          (z_{1 - alpha/2} + z_{power}) * std_error: the smallest relative lift a
                     two-sided level-alpha test detects with probability `power`
    A non-finite L_b (a replicate with c_b = 0) makes all four NaN, logged with the count
    (Lift.n_nonfinite): the lift's resampling distribution does not exist there.
    `interval`: (low, high) of the lift from another method (recsim/ope/intervals.py:
    studentized, BCa, empirical likelihood) replaces the percentile interval; the p-value,
    standard error and MDE stay those of the replicate distribution.
    """
    with np.errstate(divide="ignore", invalid="ignore"):  # a replicate may have control 0
        reps = np.asarray(t_reps, dtype=np.float64) / c_reps - 1
    lo, hi = percentile_interval(reps, alpha, f"{name} lift") if interval is None else interval
    bad = count_nonfinite(reps)
    if bad or reps.size == 0:
        p, se = float("nan"), float("nan")
    else:
        p = min(1.0, 2 * min(float((reps <= 0).mean()), float((reps >= 0).mean())))
        se = float(reps.std(ddof=1)) if reps.size > 1 else float("nan")
    z = NormalDist().inv_cdf(1 - alpha / 2) + NormalDist().inv_cdf(power)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = float(np.float64(t.value) / c.value - 1)
    return Lift(name, c, t, value, lo, hi, p, se, z * se, bad)


def offline_lifts(names: list[str], control: pl.DataFrame, treatment: pl.DataFrame,
                  boot: Bootstrap, alpha: float | None = None, ray_shards: int = 0
                  ) -> dict[str, Lift]:
    """Lift per estimator; `control` and `treatment` are the same logged decisions, each with
    its policy's target_prob (and target_reward_hat / target_marginal where used).
    ray_shards > 0 sums the rows in that many Ray tasks (same numbers; recsim/distributed.py).
    boot.interval other than "percentile" sums both frames once more, in this process, for the
    joint influence values of the lift (recsim/ope/intervals.py)."""
    _check_same_requests(control, treatment)
    alpha = boot.alpha if alpha is None else alpha
    run = evaluate
    if ray_shards:
        from functools import partial

        from recsim.ope.distributed import evaluate_on_ray
        run = partial(evaluate_on_ray, n_shards=ray_shards)
    c = run(names, control, boot, alpha, source="control decisions")
    t = run(names, treatment, boot, alpha, source="treatment decisions")
    bounds = {n: None for n in names}
    if boot.interval != "percentile":  # hook: paired studentized / BCa (recsim/ope/intervals.py)
        from recsim.ope.intervals import offline_lift_intervals

        other = offline_lift_intervals(list(names), control, treatment, boot.interval,
                                       boot.n_boot, boot.seed, alpha)
        bounds = {n: (other[n].low, other[n].high) for n in names}
    return {n: lift_from_replicates(n, *c[n][:1], *t[n][:1], c[n][1], t[n][1], alpha,
                                    interval=bounds[n])
            for n in names}


def offline_lift(name: str, control: pl.DataFrame, treatment: pl.DataFrame, boot: Bootstrap,
                 alpha: float | None = None) -> Lift:
    return offline_lifts([name], control, treatment, boot, alpha)[name]


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down; controls the family-wise error rate)."""
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p)
    adjusted = np.empty_like(p)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


@dataclass(frozen=True)
class SegmentLift:
    segment: str  # e.g. "tenure"
    value: str  # e.g. "new"
    lift: Lift
    p_adjusted: float  # Holm over every segment in the table


def member_segments(members: pl.DataFrame, new_member_days: int = 90,
                    languages: bool = False) -> pl.DataFrame:
    """(member_id, tenure, activity[, lang]): new vs tenured, activity terciles (low / mid /
    high), and with `languages` the member's language (multilingual worlds)."""
    extra = {"lang": pl.col("lang")} if languages else {}
    return members.select(
        "member_id",
        tenure=pl.when(pl.col("tenure_days") < new_member_days).then(pl.lit("new"))
        .otherwise(pl.lit("tenured")),
        activity=pl.col("activity_level").qcut([1 / 3, 2 / 3], labels=["low", "mid", "high"])
        .cast(pl.String),
        **extra,
    )


def segment_lifts(name: str, control: pl.DataFrame, treatment: pl.DataFrame,
                  segments: pl.DataFrame, boot: Bootstrap, min_rows: int = 50) -> list[SegmentLift]:
    """Lift per segment value; intervals at level alpha / m (Bonferroni), p-values Holm-adjusted.

    `segments` has member_id and one String column per segment dimension. Segments with fewer
    than `min_rows` decisions are left out (their estimate would be noise).
    """
    _check_same_requests(control, treatment)
    dims = [c for c in segments.columns if c != "member_id"]
    c_seg = control.join(segments, on="member_id", how="left", maintain_order="left")
    t_seg = treatment.join(segments, on="member_id", how="left", maintain_order="left")
    cells = [(d, v) for d in dims for v in sorted(c_seg[d].drop_nulls().unique().to_list())
             if c_seg.filter(pl.col(d) == v).height >= min_rows]
    if not cells:
        return []
    alpha = boot.alpha / len(cells)
    lifts = [offline_lift(name, c_seg.filter(pl.col(d) == v), t_seg.filter(pl.col(d) == v),
                          boot, alpha) for d, v in cells]
    adjusted = holm([lift.p_value for lift in lifts])
    return [SegmentLift(d, v, lift, p) for (d, v), lift, p in zip(cells, lifts, adjusted)]


def true_value(truth: UserModel, action_probs: pl.DataFrame, requests: pl.DataFrame,
               metric: str = "click", weights: dict | None = None) -> float:
    """Expected engagement per request when the policy is served online.

    Args:
        action_probs: (request_id, post_id, prob[, position]) the policy's probability of each
            post at each slot (marginal over the slots above); without `position`, the top slot.
        requests: (request_id, member_id, timestamp) the requests it is served to.
        metric: a recsim.world.rewards metric (the older "p_click" style names are accepted too).
    """
    return rewards.expected_per_request(truth, action_probs, requests, metric, weights)["metric"]
