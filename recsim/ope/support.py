"""Support: the share of a policy's slate on posts the logging policy could have shown there.

Off-policy estimators only see the posts the logging policy could show; a policy that puts mass
elsewhere (a retrieval funnel bringing posts the log never had as candidates) gets estimates
that miss that mass: biased, and the report says so (`support_status`).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from recsim.ope.slate_offline import KEY, check_columns

def _support_dict(per_slot: pl.DataFrame) -> dict:
    """per_slot: (request_id, position, supported share) -> {support, per_slot, n_requests}."""
    by_slot = per_slot.group_by("position").agg(pl.col("share").mean()).sort("position")
    return {"support": float(per_slot["share"].mean()),
            "per_slot": dict(zip(by_slot["position"].to_list(), by_slot["share"].to_list())),
            "n_requests": per_slot["request_id"].n_unique()}


def support(slot_probs: pl.DataFrame, candidates: pl.DataFrame) -> dict:
    """The share of the policy's slate on posts the logging policy could have shown there.

    slot_probs: (request_id, post_id, position, prob) from `slate_marginals`. The logging policy
    explores over all its candidates at every slot, so "could have shown" is "is in the
    request's logged candidate set". Returns {"support": mean over requests and slots of the
    supported mass at the slot, "per_slot": {position: mean over requests}, "n_requests"}:
    1 for a policy over the logged candidates, below 1 when retrieval brings unlogged posts.
    """
    check_columns(slot_probs, "slot_probs", ("request_id", "post_id", "position", "prob"))
    check_columns(candidates, "candidates", ("request_id", "post_id"))
    logged = candidates.select(pl.col(KEY).cast(pl.Int64), logged=pl.lit(True))
    per_slot = slot_probs.with_columns(pl.col(KEY).cast(pl.Int64)).join(
        logged, on=KEY, how="left").group_by("request_id", "position").agg(
        share=(pl.col("prob") * pl.col("logged").fill_null(False)).sum() / pl.col("prob").sum())
    return _support_dict(per_slot)


def decisions_support(decisions: pl.DataFrame) -> dict:
    """`support` of the target from the frame of `slate_decisions` (its unsupported_slot_mass)."""
    check_columns(decisions, "decisions", ("request_id", "position", "unsupported_slot_mass"))
    return _support_dict(decisions.select("request_id", "position",
                                          share=1.0 - pl.col("unsupported_slot_mass")))


def support_status(share: float | dict, tolerance: float = 1e-6) -> str:
    """The status of a slate estimate, for the report: "full support", or "partial support
    (0.63): biased" (the unlogged posts' reward is missing from the estimate), or "no support:
    no estimate". `share`: a `support` dict or its "support" value."""
    share = share["support"] if isinstance(share, dict) else float(share)
    if not np.isfinite(share):
        raise ValueError(f"support_status: support must be a number in [0, 1], got {share}")
    if share >= 1 - tolerance:
        return "full support"
    if share <= tolerance:
        return "no support: no estimate"
    return f"partial support ({share:.2f}): biased"
