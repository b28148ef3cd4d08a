"""The Open Bandit Dataset sample shipped in the `obp==0.4.1` wheel, read with polars.

ZOZOTOWN's fashion e-commerce site showed 3 of 80 items per impression, one log per logging
policy: `random` (uniform, 1/80 per item and position) and `bts` (Bernoulli Thompson sampling),
10,000 rows each (one row per shown position) with click and propensity_score. The obp library
is not imported (it does not run on this Python); only its files are read.

The check of the Open Bandit paper (Saito et al. 2021): estimate one policy's click rate from
the *other* policy's log and compare with its observed on-policy click rate, as a relative
estimation error |estimate - on-policy| / on-policy.

    python -m recsim.ope.adapters.obd [--n-boot 500]

Evaluation policies' action distributions, per (item, position):
    random  1/80
    bts     Thompson sampling with the production Beta prior that obp ships
            (obp/policy/conf/prior_bts.yaml), its top-3 marginals by Monte Carlo, as obp's
            `BernoulliTS(is_zozotown_prior=True).compute_batch_action_dist` does.
Rows are the bootstrap clusters (the sample has no user id).
"""

from __future__ import annotations

import logging
from importlib import metadata
from pathlib import Path

import numpy as np
import polars as pl
import yaml

from recsim.ope.estimators import Bootstrap, evaluate

log = logging.getLogger(__name__)

POLICIES = ("random", "bts")
N_ITEMS, N_POSITIONS = 80, 3
ESTIMATORS = ("replay", "ips", "clipped_ips", "snips", "dm", "dr", "sndr")


def _obp_file(suffix: str) -> Path:
    try:
        files = metadata.files("obp") or []
    except metadata.PackageNotFoundError as err:
        raise FileNotFoundError("the Open Bandit Dataset sample comes with the obp==0.4.1 wheel: "
                                "pip install --no-deps obp==0.4.1") from err
    for f in files:
        if str(f).endswith(suffix):
            return Path(f.locate())
    raise FileNotFoundError(f"obp package has no file ending in {suffix}")


def load_log(policy: str, campaign: str = "all") -> pl.DataFrame:
    """One logging policy's log: (member_id, timestamp, item_id, position, reward, propensity).

    member_id is the row number (each impression its own bootstrap cluster); positions are 1-3.
    """
    if policy not in POLICIES:
        raise ValueError(f"OBD policy '{policy}' is unknown; choose from {list(POLICIES)}")
    path = _obp_file(f"obd/{policy}/{campaign}/{campaign}.csv")
    frame = pl.read_csv(path, columns=["timestamp", "item_id", "position", "click",
                                       "propensity_score"])
    return frame.with_row_index("member_id").select(
        pl.col("member_id").cast(pl.Int64), "timestamp", "item_id", "position",
        reward=pl.col("click").cast(pl.Float64), propensity=pl.col("propensity_score"))


def bts_action_dist(campaign: str = "all", n_sim: int = 100_000, seed: int = 12345) -> np.ndarray:
    """[80, 3] probability of each item at each position under production BTS (Monte Carlo)."""
    prior = yaml.safe_load(_obp_file("obp/policy/conf/prior_bts.yaml").read_text())[campaign]
    rng = np.random.default_rng(seed)
    theta = rng.beta(np.asarray(prior["alpha"], float), np.asarray(prior["beta"], float),
                     size=(n_sim, N_ITEMS))
    top = np.argsort(-theta, axis=1)[:, :N_POSITIONS]
    dist = np.zeros((N_ITEMS, N_POSITIONS))
    for k in range(N_POSITIONS):
        dist[:, k] = np.bincount(top[:, k], minlength=N_ITEMS) / n_sim
    return dist


def action_dist(policy: str, campaign: str = "all") -> np.ndarray:
    if policy == "random":
        return np.full((N_ITEMS, N_POSITIONS), 1.0 / N_ITEMS)
    return bts_action_dist(campaign)


def decisions(behavior: pl.DataFrame, target: np.ndarray, smoothing: float = 10.0) -> pl.DataFrame:
    """The behaviour log framed for the estimators, with an evaluation policy's probabilities.

    The reward model of DM / DR is the click rate per (item, position), shrunk toward the
    position's rate with `smoothing` pseudo-impressions, fitted on the behaviour log itself.
    """
    ctr = behavior.group_by("item_id", "position").agg(clicks=pl.col("reward").sum(), n=pl.len())
    pos_rate = behavior.group_by("position").agg(rate=pl.col("reward").mean())
    q = np.zeros((N_ITEMS, N_POSITIONS))
    rates = dict(pos_rate.iter_rows())
    q[:] = [rates.get(k + 1, 0.0) for k in range(N_POSITIONS)]
    for item, pos, clicks, n in ctr.iter_rows():
        q[item, pos - 1] = (clicks + smoothing * rates[pos]) / (n + smoothing)
    item = behavior["item_id"].to_numpy()
    pos = behavior["position"].to_numpy() - 1
    unsupported = pl.DataFrame({"item_id": np.arange(N_ITEMS)}).join(
        behavior.select("item_id").unique(), on="item_id", how="anti")["item_id"].to_numpy()
    return behavior.with_columns(
        target_prob=target[item, pos],
        reward_hat=q[item, pos],
        target_reward_hat=(target * q).sum(axis=0)[pos],
        unsupported_mass=target[unsupported][:, pos].sum(axis=0) if len(unsupported) else 0.0,
    )


def relative_errors(n_boot: int = 500, seed: int = 0) -> list[dict]:
    """For each (behaviour, evaluation) pair: each estimator's estimate of the evaluation
    policy's click rate from the behaviour log, its on-policy rate, and the relative error."""
    logs = {p: load_log(p) for p in POLICIES}
    dists = {p: action_dist(p) for p in POLICIES}
    boot = Bootstrap(n_boot, seed)
    rows = []
    for behavior, target in (("random", "bts"), ("bts", "random")):
        on_policy = float(logs[target]["reward"].mean())
        frame = decisions(logs[behavior], dists[target])
        for name, (est, _) in evaluate(list(ESTIMATORS), frame, boot,
                                       source=f"obd/{behavior}").items():
            rows.append({"behavior": behavior, "evaluation": target, "estimator": name,
                         "estimate": est.value, "ci_low": est.ci_low, "ci_high": est.ci_high,
                         "on_policy": on_policy,
                         "relative_error": abs(est.value - on_policy) / on_policy,
                         "on_policy_inside": bool(est.ci_low <= on_policy <= est.ci_high),
                         **{k: est.diagnostics[k] for k in ("effective_sample_size",
                                                            "max_weight", "unsupported_mass")}})
    return rows
