"""The engagement metric an A/B is judged on, as a polars expression over a log, and its truth.

    click       the post was clicked
    engagement  any of click, like, comment, share
    weighted    a weighted sum of actions, e.g. {click: 1, like: 2, comment: 4, share: 4}
    dwell       seconds spent on the post

`observed(metric)` reads an impressions frame (schema.IMPRESSIONS); `expected(metric)` reads the
user model's `expected_outcomes` frame (p_click, p_like, ...), so each metric has an exact true
value: all four are linear in per-impression outcomes. (In the world, like / comment / share
happen only after a click, so `engagement` equals `click` there; on other logs it need not.)
"""

from __future__ import annotations

import polars as pl

METRICS = ("click", "like", "comment", "share", "engagement", "weighted", "dwell")
ACTIONS = ("click", "like", "comment", "share")
DEFAULT_WEIGHTS = {"click": 1.0, "like": 2.0, "comment": 4.0, "share": 4.0}


def _check(metric: str, weights: dict | None) -> dict:
    if metric not in METRICS:
        raise ValueError(f"metric '{metric}' is unknown; choose from {list(METRICS)}")
    weights = dict(DEFAULT_WEIGHTS if weights is None else weights)
    unknown = sorted(set(weights) - set(ACTIONS))
    if unknown:
        raise ValueError(f"reward weights: unknown action(s) {unknown}; choose from {list(ACTIONS)}")
    return weights


def engagement_event(metric: str) -> str:
    """The boolean outcome that counts as engaging with a post under `metric`: the metric's own
    action, else a click (member histories and retrieval recall are built from it)."""
    return metric if metric in ACTIONS else "click"


def observed(metric: str, weights: dict | None = None) -> pl.Expr:
    """The metric as a Float64 expression over an impressions frame."""
    weights = _check(metric, weights)
    if metric in ACTIONS:
        return pl.col(metric).cast(pl.Float64)
    if metric == "engagement":
        return pl.any_horizontal(*ACTIONS).cast(pl.Float64)
    if metric == "weighted":
        return pl.sum_horizontal(w * pl.col(a).cast(pl.Float64) for a, w in weights.items())
    return pl.col("dwell_seconds")


def expected(metric: str, weights: dict | None = None) -> pl.Expr:
    """The metric's expectation over an `expected_outcomes` frame (p_click, ..., e_dwell_seconds)."""
    weights = _check(metric, weights)
    if metric in ACTIONS:
        return pl.col(f"p_{metric}")
    if metric == "engagement":  # like / comment / share imply a click in the world
        return pl.col("p_click")
    if metric == "weighted":
        return pl.sum_horizontal(w * pl.col(f"p_{a}") for a, w in weights.items())
    return pl.col("e_dwell_seconds")
