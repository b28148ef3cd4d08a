"""Policies as action distributions over a request's candidates, and the logged decisions they
are evaluated on.

The walking skeleton evaluates the *top slot* of the feed: per request, the logging policy's
first-slot propensity is exact and unconditional, so IPS / SNIPS on it are unbiased. (Deeper
slots need position-aware estimators: see recsim/estimators.py for what exists.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl


@dataclass
class PolicyConfig:
    name: str = "ranker"
    features: list[str] = field(default_factory=lambda: ["ids", "context"])


def top_slot_probabilities(scored: pl.DataFrame, temperature: float) -> pl.DataFrame:
    """(request_id, post_id, score) -> (request_id, post_id, prob) for the top slot.

    temperature 0: deterministic, the best-scored candidate (ties broken by post_id);
    temperature > 0: softmax(score / temperature) within each request.
    """
    if temperature < 0:
        raise ValueError(f"sim.policy_temperature must be >= 0, got {temperature}")
    if temperature == 0:
        best = (scored.sort(["request_id", "score", "post_id"], descending=[False, True, False])
                .group_by("request_id", maintain_order=True).first())
        return best.select("request_id", "post_id", prob=pl.lit(1.0))
    z = pl.col("score") / temperature
    return scored.with_columns(
        prob=(z - z.max().over("request_id")).exp()
    ).with_columns(prob=pl.col("prob") / pl.col("prob").sum().over("request_id")).select(
        "request_id", "post_id", "prob")


def logged_top_slot(impressions: pl.DataFrame, reward: str = "click") -> pl.DataFrame:
    """The logged first-slot decisions: (request_id, member_id, timestamp, post_id, propensity, reward)."""
    return impressions.filter(pl.col("position") == 1).select(
        "request_id", "member_id", "timestamp", "post_id", "propensity",
        reward=pl.col(reward).cast(pl.Float64))


def with_target(decisions: pl.DataFrame, action_probs: pl.DataFrame) -> pl.DataFrame:
    """Attach the evaluation policy's probability of each logged action (0 when it never picks it)."""
    return decisions.join(action_probs.rename({"prob": "target_prob"}),
                          on=["request_id", "post_id"], how="left",
                          maintain_order="left").with_columns(
        pl.col("target_prob").fill_null(0.0))
