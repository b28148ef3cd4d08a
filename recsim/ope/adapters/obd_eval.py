"""Off-policy estimates on the Open Bandit Dataset, checked against the on-policy truth.

The check of the Open Bandit paper (Saito et al. 2021): estimate one policy's click rate from
the *other* policy's log, and compare with the click rate that policy's own log shows (the
"truth", an on-policy estimate with its own bootstrap interval). Two directions per campaign:
`random_to_bts` (the random log evaluates Bernoulli TS) and `bts_to_random`.

    evaluate_obd             each estimator's estimate with its interval (the shared member
                             bootstrap, recsim/ope/bootstrap.py), the truth with its interval,
                             the relative error |estimate - truth| / truth and a validity status
                             (recsim/ope/verdict.py: replay is invalid on the BTS log, whose
                             logging is not uniform; small effective sample sizes are flagged)
    relative_error_protocol  obp's published protocol (examples/obd/evaluate_off_policy_
                             estimators.py): resample the behaviour log 30 times
                             (RandomState(b).choice(n, n) for b = 0..29, as obp's
                             `sample_bootstrap_bandit_feedback(random_state=b)`), estimate on each
                             resample, and report the mean and standard deviation (ddof 1) of
                             the relative error, beside obp's published figures

IPS and SNIPS are obp's IPW and SNIPW exactly (same rows, resamples and BTS table), so their
protocol figures reproduce obp's; DM / DR / SNDR use this project's reward model (click rate
per item and position, recsim/ope/adapters/obd.py) where obp fits a logistic regression on
user features, so those differ.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import polars as pl

from recsim.ope import verdict
from recsim.ope.adapters import obd
from recsim.ope.bootstrap import weight_diagnostics
from recsim.ope.estimators import ESTIMATORS, Bootstrap, Estimate, evaluate, summarize

log = logging.getLogger(__name__)

DIRECTIONS = {"random_to_bts": ("random", "bts"), "bts_to_random": ("bts", "random")}
DEFAULT_ESTIMATORS = ("replay", "ips", "clipped_ips", "snips", "dm", "dr", "sndr")
N_RUNS = 30  # obp's published protocol: 30 resamples of the behaviour log

# obp's examples/obd/README.md (st-tech/zr-obp, v0.4.x): relative estimation error, mean and
# std over 30 resamples, random -> BTS, campaign all, the obp wheel's sample, logistic
# regression reward model, random_state 12345. Our names; obp calls them ipw, snipw.
OBP_PUBLISHED = {("all", "random_to_bts"): {
    "dm": (0.156876, 0.109898), "ips": (0.311082, 0.311170), "snips": (0.311795, 0.334736),
    "dr": (0.292464, 0.315485), "sndr": (0.302407, 0.328434)}}


def _check_estimators(estimators) -> list[str]:
    names = list(estimators)
    unknown = [n for n in names if n not in ESTIMATORS or n in ("iips", "rips")]
    if unknown or not names:
        raise ValueError(f"OBD estimators {unknown or names}: choose one or more of "
                         f"{list(DEFAULT_ESTIMATORS)}")
    return names


def _setup(campaign: str, direction: str, n_sim: int, data_dir):
    """(behaviour log, evaluation policy's log, its action distribution, logging uniform?)."""
    obd.check_choice("campaign", campaign, obd.CAMPAIGNS)
    behavior, target = DIRECTIONS[obd.check_choice("direction", direction, tuple(DIRECTIONS))]
    behavior_log = obd.load_log(behavior, campaign, data_dir)
    dist = obd.action_dist(target, campaign, n_sim, data_dir)
    uniform = obd.logging_is_uniform(behavior_log, dist.shape[0])
    return behavior_log, obd.load_log(target, campaign, data_dir), dist, uniform


def on_policy_truth(target_log: pl.DataFrame, boot: Bootstrap, source: str) -> Estimate:
    """The evaluation policy's own click rate with its interval: IPS with the logging policy as
    its own target (every weight 1, so the value is the mean click), on the shared bootstrap."""
    frame = target_log.with_columns(target_prob=pl.col("propensity"))
    return evaluate(["ips"], frame, boot, source=source)["ips"][0]


def _status(name: str, diagnostics: dict, uniform: bool, min_ess: float) -> str:
    return verdict.status(name, min_ess, diagnostics["effective_sample_size"],
                          1.0 - diagnostics["unsupported_mass"], uniform)


def evaluate_obd(campaign: str = "all", direction: str = "random_to_bts",
                 estimators=DEFAULT_ESTIMATORS, n_boot: int = 500, seed: int = 0,
                 min_ess: float = 100.0, n_sim: int = obd.OBP_N_SIM,
                 data_dir: str | Path | None = None, alpha: float = 0.05) -> list[dict]:
    """Each estimator's estimate of the evaluation policy's click rate from the behaviour log.

    Args:
        campaign: all | men | women.  direction: random_to_bts | bts_to_random.
        estimators: names from recsim/ope/estimators.py (top-slot family).
        n_boot, seed: the shared member bootstrap (here a member is an impression row).
        min_ess: below this effective sample size a status is not ok (recsim/ope/verdict.py).
        n_sim: simulations of the BTS action distribution (obp's 1e6).
        data_dir: the full-size dataset's root; default the obp wheel's sample.
        alpha: the intervals' level is 1 - alpha (`recsim-run data=obd`: sim.alpha).
    Returns:
        One row per estimator: campaign, direction, behavior, evaluation, estimator, estimate,
        ci_low, ci_high, on_policy (the truth), on_policy_low, on_policy_high, relative_error,
        on_policy_inside (the truth inside the estimate's interval), status, n and the weight
        diagnostics (effective_sample_size, max_weight, unsupported_mass).
    """
    names = _check_estimators(estimators)
    behavior_log, target_log, dist, uniform = _setup(campaign, direction, n_sim, data_dir)
    behavior, target = DIRECTIONS[direction]
    boot = Bootstrap(n_boot, seed, alpha)
    truth = on_policy_truth(target_log, boot, f"obd/{target}/{campaign}")
    results = evaluate(names, obd.decisions(behavior_log, dist), boot,
                       source=f"obd/{behavior}/{campaign}")
    rows = []
    for name, (est, _) in results.items():
        diag = est.diagnostics
        rows.append({
            "campaign": campaign, "direction": direction, "behavior": behavior,
            "evaluation": target, "estimator": name, "estimate": est.value,
            "ci_low": est.ci_low, "ci_high": est.ci_high, "on_policy": truth.value,
            "on_policy_low": truth.ci_low, "on_policy_high": truth.ci_high,
            "relative_error": abs(est.value - truth.value) / truth.value,
            "on_policy_inside": bool(est.ci_low <= truth.value <= est.ci_high),
            "status": _status(name, diag, uniform, min_ess), "n": est.n,
            **{k: diag[k] for k in ("effective_sample_size", "max_weight", "unsupported_mass")}})
    return rows


def point_estimates(names: list[str], frame: pl.DataFrame, source: str
                    ) -> dict[str, tuple[float, dict]]:
    """name -> (value, weight diagnostics) without a bootstrap: the estimators' terms summed
    once (`summarize`) and combined, as `finish` does for its point value."""
    cs, columns, max_weight = summarize(names, frame, source)
    totals = cs.sums.sum(axis=0)
    index = {t: i for i, t in enumerate(cs.terms)}
    out = {}
    for name, cols in columns.items():
        mine = {term: float(totals[index[c]]) for term, c in cols.items()}
        with np.errstate(invalid="ignore", divide="ignore"):
            value = float(ESTIMATORS[name].combine(mine))
        out[name] = (value, weight_diagnostics(mine, cs.n_rows, max_weight[name]))
    return out


def resample(frame: pl.DataFrame, run: int) -> pl.DataFrame:
    """obp's `sample_bootstrap_bandit_feedback(random_state=run)`: n rows drawn with
    replacement by numpy's legacy RandomState(run).choice."""
    idx = np.random.RandomState(run).choice(np.arange(frame.height), size=frame.height,
                                            replace=True)
    return frame[idx]


def relative_error_protocol(campaign: str = "all", direction: str = "random_to_bts",
                            estimators=DEFAULT_ESTIMATORS, n_runs: int = N_RUNS,
                            min_ess: float = 100.0, n_sim: int = obd.OBP_N_SIM,
                            data_dir: str | Path | None = None) -> list[dict]:
    """obp's protocol (module docstring): the relative error of each estimator over `n_runs`
    resamples of the behaviour log, against the evaluation policy's on-policy click rate.

    Returns one row per estimator: campaign, direction, estimator, n_runs, mean, std (ddof 1),
    on_policy, status (on the whole log), and obp_mean / obp_std where obp published them
    (None elsewhere).
    """
    names = _check_estimators(estimators)
    if n_runs < 2:
        raise ValueError(f"relative_error_protocol: n_runs must be >= 2, got {n_runs}")
    behavior_log, target_log, dist, uniform = _setup(campaign, direction, n_sim, data_dir)
    truth = float(target_log["reward"].mean())
    source = f"obd/{DIRECTIONS[direction][0]}/{campaign}"
    whole = point_estimates(names, obd.decisions(behavior_log, dist), source)
    errors = np.zeros((n_runs, len(names)))
    for run in range(n_runs):
        frame = obd.decisions(resample(behavior_log, run), dist)
        values = point_estimates(names, frame, f"{source} resample {run}")
        errors[run] = [abs(values[n][0] - truth) / truth for n in names]
    published = OBP_PUBLISHED.get((campaign, direction), {})
    return [{"campaign": campaign, "direction": direction, "estimator": name, "n_runs": n_runs,
             "mean": float(errors[:, j].mean()), "std": float(errors[:, j].std(ddof=1)),
             "on_policy": truth, "status": _status(name, whole[name][1], uniform, min_ess),
             "obp_mean": published.get(name, (None, None))[0],
             "obp_std": published.get(name, (None, None))[1]}
            for j, name in enumerate(names)]
