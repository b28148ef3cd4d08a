"""The A/B comparison: relative lift of treatment over control, offline and in truth.

Offline: both policies are evaluated on the *same* logged decisions with the *same* bootstrap
weights, so the lift's interval is paired. Truth: both policies' action distributions are served
to the world's user model, whose expected engagement gives the true online values and lift.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from recsim.estimators import Bootstrap, Estimate, estimate, percentile_interval
from recsim.world import UserModel


@dataclass(frozen=True)
class Lift:
    estimator: str
    control: Estimate
    treatment: Estimate
    lift: float  # treatment / control - 1
    ci_low: float
    ci_high: float
    p_value: float  # two-sided, from the bootstrap distribution of the lift


def offline_lift(name: str, control: pl.DataFrame, treatment: pl.DataFrame, boot: Bootstrap,
                 alpha: float = 0.05) -> Lift:
    """`control` and `treatment` are the same logged decisions with each policy's target_prob."""
    if control.height != treatment.height:
        raise ValueError("control and treatment must be evaluated on the same logged decisions "
                         f"({control.height} vs {treatment.height} rows)")
    c, c_reps = estimate(name, control, boot, alpha)
    t, t_reps = estimate(name, treatment, boot, alpha)
    with np.errstate(divide="ignore", invalid="ignore"):  # a replicate may have control 0
        reps = t_reps / c_reps - 1
    lo, hi = percentile_interval(reps, alpha)
    finite = reps[np.isfinite(reps)]
    p = 2 * min(float((finite <= 0).mean()), float((finite >= 0).mean()))
    return Lift(name, c, t, t.value / c.value - 1, lo, hi, min(p, 1.0))


def true_value(truth: UserModel, action_probs: pl.DataFrame, requests: pl.DataFrame,
               metric: str = "p_click") -> float:
    """Expected engagement per request at the top slot when the policy is served online.

    Args:
        action_probs: (request_id, post_id, prob) the policy's top-slot distribution.
        requests: (request_id, member_id, timestamp) the requests it is served to.
    """
    rows = action_probs.filter(pl.col("prob") > 0).join(requests, on="request_id")
    expected = truth.expected_outcomes(rows.with_columns(position=pl.lit(1, dtype=pl.Int32)))
    return float((expected["prob"] * expected[metric]).sum() / requests.height)
