"""A simulated online A/B over whole slates: the ground truth beside the offline estimates.

The offline estimators (recsim/ope/estimators.py) guess how a policy would do from a log; here
the world's user model *is* the online population, so both the expected engagement of a
policy's slates and a sampled online experiment can be computed exactly as they would happen.

    1. expected_engagement  the expected engagement per request of a policy's slates: every
                            row's prob * its expected outcome (position effect included),
                            summed and divided by the number of requests; per action and for
                            the metric. At one row per request at position 1 it is ab.true_value.
    2. true_lift            both policies' expected engagement and the true relative lift.
    3. assign_arms          members split by a seeded splitmix64 hash of member_id: the same
                            member is in the same arm for every request, whatever else is in
                            the experiment, and the split is a pure function of the seed.
    4. simulate_online_ab   each request is served its member's arm's slate, the member
                            responds (user_model.sample_outcomes), the metric is summed per
                            request (rewards.observed), and the lift of the per-request means
                            gets a member-clustered Poisson(1) bootstrap interval (independent
                            arms: disjoint members), a two-sided bootstrap p-value, its standard
                            error and the minimum detectable effect (ab.lift_from_replicates).

Inputs (validated; a bad frame raises ValueError naming the frame and the column):

    slates    request_id Int64, post_id Int64, position Int32 (1..S), prob Float64: the
              policy's probability of this post at this position (marginal over the slots above)
    served    the same columns, exactly one post per (request_id, position), prob 1.0: the slate
              shown online (for a deterministic policy, served == slates)
    requests  request_id, member_id, timestamp: the requests the policies are served to

Shape legend: R requests, S slots per slate, N = rows of a slates frame (<= R * S per policy),
G members, B bootstrap replicates.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import polars as pl

from recsim.ope.ab import lift_from_replicates
from recsim.ope.bootstrap import splitmix64, cluster_sums, finish, ratio
from recsim.world import rewards
from recsim.world.timeline import hours_since_start
from recsim.world.user_model import UserModel, sample_outcomes

log = logging.getLogger(__name__)

ACTIONS = tuple(rewards.EXPECTED_COLUMNS)  # click, like, comment, share, dwell
_OBSERVED_COLUMN = {"click": "click", "like": "like", "comment": "comment", "share": "share",
                    "dwell": "dwell_seconds"}
_ARM_SALT = np.uint64(0x5EED_A7B0_0A11_CE55)  # keeps the arm split apart from bootstrap counts
_OUTCOME_STREAM = 0x0711_7E  # the outcome generator's stream, beside the seed
_SLATE_COLUMNS = ("request_id", "post_id", "position", "prob")
_REQUEST_COLUMNS = ("request_id", "member_id", "timestamp")


# --- input checks ---------------------------------------------------------------------------


def _require_columns(frame: pl.DataFrame, name: str, columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name}: missing column(s) {missing}; it has {frame.columns}")


def _first_keys(frame: pl.DataFrame, key: list[str]) -> list:
    return [tuple(r) if len(r) > 1 else r[0] for r in frame.select(key).head(3).rows()]


def check_requests(requests: pl.DataFrame, name: str = "requests") -> None:
    """Columns present, no null ids, one row per request_id."""
    _require_columns(requests, name, _REQUEST_COLUMNS)
    if requests.height == 0:
        raise ValueError(f"{name}: no rows; column 'request_id' must list the requests served")
    for col in _REQUEST_COLUMNS:
        if requests[col].null_count():
            raise ValueError(f"{name}: column '{col}' has {requests[col].null_count()} null(s)")
    dup = requests.filter(pl.col("request_id").is_duplicated())
    if dup.height:
        ids = dup["request_id"].unique().sort()
        raise ValueError(f"{name}: column 'request_id' is not unique: {ids.len()} id(s) repeat "
                         f"(first: {ids.head(3).to_list()})")


def check_slates(slates: pl.DataFrame, requests: pl.DataFrame, name: str,
                 served: bool = False) -> None:
    """Check a slates frame [N rows] against the contract (module docstring) and `requests`.

    served=True also requires exactly one post per (request_id, position), no post twice in a
    request and prob 1.0 (the slate a member was actually shown).
    """
    _require_columns(slates, name, _SLATE_COLUMNS)
    for col in _SLATE_COLUMNS:
        if slates[col].null_count():
            raise ValueError(f"{name}: column '{col}' has {slates[col].null_count()} null(s)")
    if slates.height and slates["position"].min() < 1:
        raise ValueError(f"{name}: column 'position' must be >= 1 (1 is the top slot); "
                         f"found {slates['position'].min()}")
    prob = slates["prob"]
    if slates.height and (prob.min() < 0 or prob.max() > 1 + 1e-9):
        raise ValueError(f"{name}: column 'prob' must lie in [0, 1]; "
                         f"found [{prob.min()}, {prob.max()}]")
    if served:
        _check_served(slates, name)
    else:
        per_slot = slates.group_by("request_id", "position").agg(pl.col("prob").sum())
        over = per_slot.filter(pl.col("prob") > 1 + 1e-6)
        if over.height:
            raise ValueError(f"{name}: column 'prob' sums to more than 1 at {over.height} "
                             f"(request_id, position) slot(s) (first: "
                             f"{_first_keys(over, ['request_id', 'position'])})")
    unknown = slates.join(requests, on="request_id", how="anti")
    if unknown.height:
        ids = unknown["request_id"].unique().sort()
        raise ValueError(f"{name}: column 'request_id' has {ids.len()} id(s) missing from the "
                         f"requests frame's 'request_id' column (first: {ids.head(3).to_list()})")


def _check_served(served: pl.DataFrame, name: str) -> None:
    for key, what in ((["request_id", "position"], "more than one post at a position"),
                      (["request_id", "post_id"], "a post at more than one position")):
        dup = served.filter(pl.struct(key).is_duplicated())
        if dup.height:
            raise ValueError(f"{name}: column '{key[1]}': {what} in {dup['request_id'].n_unique()} "
                             f"request(s) (first (request_id, {key[1]}): {_first_keys(dup, key)}); "
                             "a served slate has exactly one post per (request_id, position)")
    if served.height and (served["prob"] != 1.0).any():
        raise ValueError(f"{name}: column 'prob' must be 1.0 on every row (the slate actually "
                         f"shown); found {served.filter(pl.col('prob') != 1.0).height} row(s) "
                         "below 1; sample a slate from a stochastic policy first")


# --- 1-2. the truth -------------------------------------------------------------------------


def expected_engagement(truth: UserModel, slates: pl.DataFrame, requests: pl.DataFrame,
                        metric: str = "click", weights: dict | None = None,
                        name: str = "slates") -> dict[str, float]:
    """Expected engagement per request of a policy's slates under the user model.

    Args:
        slates: [N rows] (request_id, post_id, position, prob); each row adds prob times the
            expected outcome of that post at that position (examination included).
        requests: [R rows] (request_id, member_id, timestamp); the divisor is R, so a request
            without rows counts as a slate of no engagement.
        metric, weights: a recsim.world.rewards metric and its action weights.
    Returns:
        {"click", "like", "comment", "share", "dwell" (seconds), "metric"}: per request.
    """
    check_requests(requests)
    check_slates(slates, requests, name)
    return rewards.expected_per_request(truth, slates, requests, metric, weights)


@dataclass(frozen=True)
class TrueSlateValues:
    """Expected engagement per request of both policies, and the true lift (treatment / control
    - 1), each a dict over ACTIONS and "metric"."""

    metric: str
    control: dict[str, float]
    treatment: dict[str, float]
    lift: dict[str, float]


def _relative(treatment: float, control: float) -> float:
    return treatment / control - 1 if control else float("nan")


def true_lift(truth: UserModel, control_slates: pl.DataFrame, treatment_slates: pl.DataFrame,
              requests: pl.DataFrame, metric: str = "click",
              weights: dict | None = None) -> TrueSlateValues:
    """Both policies' slates [N rows each] served to the user model on `requests` [R rows]."""
    c = expected_engagement(truth, control_slates, requests, metric, weights, "control_slates")
    t = expected_engagement(truth, treatment_slates, requests, metric, weights, "treatment_slates")
    return TrueSlateValues(rewards.metric_name(metric), c, t, {k: _relative(t[k], c[k]) for k in c})


# --- 3-4. the online experiment -------------------------------------------------------------


def assign_arms(member_ids: np.ndarray, seed: int, treatment_share: float = 0.5) -> np.ndarray:
    """[G] bool: True where the member is in treatment; a pure function of (seed, member_id).

    The top 53 bits of splitmix64(member_id ^ splitmix64(seed ^ salt)) are a uniform in [0, 1);
    members below `treatment_share` are treated.
    """
    if not 0.0 <= treatment_share <= 1.0:
        raise ValueError(f"treatment_share must lie in [0, 1]; got {treatment_share}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0; got {seed}")
    ids = np.asarray(member_ids).astype(np.int64).view(np.uint64)
    with np.errstate(over="ignore"):
        key = splitmix64(np.uint64(seed) ^ _ARM_SALT)
        u = (splitmix64(ids ^ key) >> np.uint64(11)).astype(np.float64) * 2.0**-53
    return u < treatment_share


@dataclass(frozen=True)
class OnlineAB:
    """One simulated online A/B; `dataclasses.asdict` of it is JSON-serialisable.

    lift = treatment_mean / control_mean - 1 (means of the metric per request); ci_low/ci_high
    its member-clustered percentile interval at level alpha; p_value two-sided from the same
    bootstrap replicates, 2 * min(share of replicate lifts <= 0, share >= 0) as in ab.py (the
    smallest alpha whose percentile interval excludes 0; resolution 1 / n_boot); std_error
    their standard deviation; mde = (z_{1-alpha/2} + z_0.8) * std_error, the smallest relative
    lift this experiment detects at 80% power (ab.py's formula).
    control_actions / treatment_actions: observed per-request means of every action.
    """

    metric: str
    lift: float
    ci_low: float
    ci_high: float
    p_value: float
    std_error: float
    mde: float
    control_mean: float
    treatment_mean: float
    n_members_control: int
    n_members_treatment: int
    n_requests_control: int
    n_requests_treatment: int
    control_actions: dict[str, float]
    treatment_actions: dict[str, float]
    alpha: float
    n_boot: int
    seed: int
    treatment_share: float


def _shown_rows(requests: pl.DataFrame, treated: np.ndarray, served_control: pl.DataFrame,
                served_treatment: pl.DataFrame) -> pl.DataFrame:
    """[n shown rows] each request's slate from its member's arm, with `_r` (row of requests),
    member_id and timestamp; sorted by (request_id, position) so the draws are reproducible."""
    indexed = requests.with_columns(_r=pl.int_range(pl.len(), dtype=pl.Int64),
                                    _t=pl.Series(treated))
    parts = [served.select("request_id", "post_id", "position")
             .join(indexed.filter(pl.col("_t") == arm), on="request_id")
             for served, arm in ((served_control, False), (served_treatment, True))]
    return pl.concat(parts).sort("request_id", "position")


def _respond(truth: UserModel, rows: pl.DataFrame, rng: np.random.Generator) -> pl.DataFrame:
    """[n] sampled outcomes (click, like, comment, share, dwell_seconds) of the shown rows."""
    m = truth.member_index(rows["member_id"].to_numpy())
    p = truth.post_index(rows["post_id"].to_numpy())
    t = rows.select(hours_since_start(pl.col("timestamp"))).to_series().to_numpy()
    probs = truth.outcome_probabilities(m, p, t, rows["position"].to_numpy())
    return pl.DataFrame(sample_outcomes(probs, rng))


def _arm_summary(name: str, member: np.ndarray, per_request: np.ndarray, actions: dict,
                 in_arm: np.ndarray, n_boot: int, seed: int, alpha: float):
    """(Estimate of the per-request mean, its [B] replicates, per-action means) of one arm."""
    terms = pl.DataFrame({"num": per_request[in_arm], "den": np.ones(int(in_arm.sum()))})
    est, reps = finish(name, cluster_sums(terms, member[in_arm]), ratio, n_boot, seed, alpha)
    n = max(int(in_arm.sum()), 1)
    return est, reps, {a: float(v[in_arm].sum() / n) for a, v in actions.items()}


def simulate_online_ab(truth: UserModel, served_control: pl.DataFrame,
                       served_treatment: pl.DataFrame, requests: pl.DataFrame,
                       metric: str = "click", weights: dict | None = None, seed: int = 0,
                       alpha: float = 0.05, n_boot: int = 500,
                       treatment_share: float = 0.5) -> OnlineAB:
    """Run the online A/B: split members, serve each request its arm's slate, sample responses.

    Args:
        served_control, served_treatment: [N rows each] the slates each policy shows (one post
            per (request_id, position), prob 1.0); a request its arm did not fill counts 0.
        requests: [R rows] (request_id, member_id, timestamp).
        seed: the arm split, the outcome draws and the bootstrap counts are functions of it.
    Returns:
        OnlineAB (lift, interval, bootstrap p-value, std error, MDE, sizes and means per arm).
    """
    metric = rewards.metric_name(metric)
    check_requests(requests)
    check_slates(served_control, requests, "served_control", served=True)
    check_slates(served_treatment, requests, "served_treatment", served=True)
    member = requests["member_id"].to_numpy().astype(np.int64)
    treated = assign_arms(member, seed, treatment_share)
    rows = _shown_rows(requests, treated, served_control, served_treatment)
    outcomes = _respond(truth, rows, np.random.default_rng([seed, _OUTCOME_STREAM]))
    r = rows["_r"].to_numpy()
    per_row = outcomes.select(rewards.observed(metric, weights)).to_series().to_numpy()
    per_request = np.bincount(r, per_row, minlength=requests.height)
    actions = {a: np.bincount(r, outcomes[col].cast(pl.Float64).to_numpy(),
                              minlength=requests.height) for a, col in _OBSERVED_COLUMN.items()}
    c, c_reps, c_actions = _arm_summary("online control", member, per_request, actions, ~treated,
                                        n_boot, seed, alpha)
    t, t_reps, t_actions = _arm_summary("online treatment", member, per_request, actions, treated,
                                        n_boot, seed, alpha)
    lift = lift_from_replicates("online", c, t, c_reps, t_reps, alpha)
    result = OnlineAB(
        metric, lift.lift, lift.ci_low, lift.ci_high, lift.p_value, lift.std_error, lift.mde,
        c.value, t.value, c.diagnostics["n_members"], t.diagnostics["n_members"], c.n, t.n,
        c_actions, t_actions, float(alpha), int(n_boot), int(seed), float(treatment_share))
    log.info("online A/B (%s, seed %d): %d + %d members, %d + %d requests, lift %.4f [%.4f, %.4f], "
             "p %.3f", metric, seed, result.n_members_control, result.n_members_treatment,
             c.n, t.n, lift.lift, lift.ci_low, lift.ci_high, lift.p_value)
    return result
