"""Guard rails on offline estimates: a validity status per estimator row, and the report's
verdict from the recommended estimator, or "this log cannot tell" with what would.

    1. status     per lift row: "ok", or why its interval should not be read as one:
                  - "assumption broken: replay needs uniform logging" (replay on a log whose
                    propensities are not 1 / number of candidates);
                  - "partial support (0.63): biased" (a policy shows posts the logging policy
                    could not have shown: their reward is missing from the estimate);
                  - "effective sample size 76 < 100" (a few logged decisions carry the estimate)
    2. verdict    from the first estimator of `preference` whose status is ok:
                  "treatment better by X% [lo, hi]", "treatment worse ...", or
                  "no detectable difference: this log detects lifts above Y% (MDE); about Z
                  times the requests would detect X%" — and "this log cannot tell" when no
                  estimator of the preference list is ok
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

OK = "ok"


def logging_is_uniform(decisions: pl.DataFrame, candidates: pl.DataFrame, tol: float = 1e-9) -> bool:
    """True when every logged decision's propensity is 1 / (its request's candidates)."""
    n = candidates.group_by("request_id").len()
    joined = decisions.select("request_id", "propensity").join(n, on="request_id", how="left")
    return bool(((joined["propensity"] - 1.0 / joined["len"]).abs() <= tol).all())


def status(estimator: str, min_ess: float, effective_sample_size: float, support: float,
           uniform_logging: bool, needs_uniform: tuple[str, ...] = ("replay",),
           unweighted: tuple[str, ...] = ("dm",)) -> str:
    """The validity status of one estimator's lift (the worse of its two policies' figures:
    pass the smaller effective sample size and the smaller support). `unweighted` estimators
    (DM: the reward model's expectation, no importance weights) skip the sample-size rule."""
    if estimator in needs_uniform and not uniform_logging:
        return f"assumption broken: {estimator} needs uniform logging"
    if support < 1 - 1e-6:
        return f"partial support ({support:.2f}): biased"
    if estimator not in unweighted and effective_sample_size < min_ess:
        return f"effective sample size {effective_sample_size:,.0f} < {min_ess:,.0f}"
    return OK


def _pct(x: float) -> str:
    return f"{100 * x:+.1f}%" if np.isfinite(x) else "n/a"


def first_usable(rows: list[dict], preference: list[str]) -> dict | None:
    """The row of the first estimator in `preference` whose status is ok; None if there is none."""
    by_name = {row["estimator"]: row for row in rows}
    return next((by_name[n] for n in preference if n in by_name and by_name[n]["status"] == OK),
                None)


def cannot_tell(rows: list[dict], preference: list[str], none_computed: str = "none computed"
                ) -> dict:
    """The verdict when no estimator of `preference` is usable: each one's status, or
    `none_computed` when none of them was computed."""
    by_name = {row["estimator"]: row for row in rows}
    reasons = "; ".join(f"{n}: {by_name[n]['status']}" for n in preference if n in by_name)
    return {"estimator": None, "detectable": False,
            "text": f"**This log cannot tell.** No recommended estimator is valid here "
                    f"({reasons or none_computed})."}


def verdict(lifts: list[dict], preference: list[str], target: float | None = None) -> dict:
    """The report's first line from the preferred estimator with an ok status.

    Args:
        lifts: report rows (estimator, lift, ci_low, ci_high, mde, status, control.n).
        preference: estimator names, most trusted first (chosen from the validity runs).
        target: the lift the team wants to detect (default: the estimate itself).
    Returns:
        {"estimator", "text", "detectable"}; estimator None when the log cannot tell.
    """
    row = first_usable(lifts, preference)
    if row is None:
        return cannot_tell(lifts, preference)
    lo, hi, mde = row["ci_low"], row["ci_high"], row.get("mde", float("nan"))
    if lo > 0 or hi < 0:
        side = "better" if lo > 0 else "worse"
        return {"estimator": row["estimator"], "detectable": True,
                "text": f"**Treatment {side} by {_pct(row['lift'])}** [{_pct(lo)}, {_pct(hi)}] "
                        f"({row['estimator']}, the recommended estimator)."}
    goal = abs(target if target is not None else row["lift"])
    more = (mde / goal) ** 2 if goal > 0 and np.isfinite(mde) else math.inf
    scale = (f"about {more:.0f} times the requests (or a stochastic policy) would detect "
             f"{_pct(goal)}" if np.isfinite(more) else "no sample size detects a zero lift")
    return {"estimator": row["estimator"], "detectable": False,
            "text": f"**No detectable difference** ({row['estimator']}: {_pct(row['lift'])} "
                    f"[{_pct(lo)}, {_pct(hi)}]): this log detects lifts above {_pct(mde)} "
                    f"(MDE); {scale}."}
