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


# The user model's expected column of each action (UserModel.expected_outcomes); dwell in seconds.
EXPECTED_COLUMNS = {"click": "p_click", "like": "p_like", "comment": "p_comment",
                    "share": "p_share", "dwell": "e_dwell_seconds"}


def metric_name(metric: str) -> str:
    """`metric`, also accepting the older "p_click" / "e_dwell_seconds" style names."""
    return metric.removeprefix("p_").removeprefix("e_").removesuffix("_seconds")


def expected_per_request(truth, slates: pl.DataFrame, requests: pl.DataFrame,
                         metric: str = "click", weights: dict | None = None) -> dict[str, float]:
    """The true value of serving `slates` to `requests`: expected engagement per request.

    Args:
        truth: the world's user model (its `expected_outcomes`).
        slates: (request_id, post_id, prob[, position]) each post's probability at each slot;
            without `position`, the top slot.
        requests: (request_id, member_id, timestamp); the divisor, so a request without rows
            counts as a slate of no engagement.
    Returns:
        {"click", "like", "comment", "share", "dwell" (seconds), "metric"}: per request.
    """
    metric = metric_name(metric)
    rows = slates.filter(pl.col("prob") > 0).join(requests, on="request_id")
    if "position" not in rows.columns:
        rows = rows.with_columns(position=pl.lit(1, dtype=pl.Int32))
    totals = truth.expected_outcomes(rows).select(
        *[(pl.col("prob") * pl.col(col)).sum().alias(a) for a, col in EXPECTED_COLUMNS.items()],
        metric=(pl.col("prob") * expected(metric, weights)).sum(),
    ).row(0, named=True)
    return {key: float(total / requests.height) for key, total in totals.items()}
