"""The position-based model's slate estimator (pbm): each logged post credited at whatever slot
it was shown, through examination weights estimated from the log.

Li et al. 2018, "Offline evaluation of ranking policies with click models" (KDD), the PBM
estimator. Under a position-based click model the expected reward of post a at slot k of request
x is beta_k * theta_a(x): the slot's examination weight times the post's attraction. A policy
pi's expected slate reward is then sum_a theta_a(x) sum_j beta_j pi(a, j | x), and

    V_pbm(pi) = mean over requests of  sum over logged (a, k) of  r(a, k) * w(a),
    w(a) = target_exposure / logging_exposure
         = sum_j beta_j pi(a, j | x) / sum_j beta_j mu(a, j | x)

is unbiased for it: over the logging policy mu, E[sum_k r(a_k, k) w(a_k)] = sum_a theta_a
sum_k beta_k mu(a, k) w(a) = sum_a theta_a sum_j beta_j pi(a, j). It needs the log to show each
post the target shows somewhere in the slate; iips (pi(a, k) / mu(a, k)) needs it at the same
slot, so a deterministic target that reorders the logged posts gives iips weight 0 on most rows
and pbm weight on most rows. The price: pbm is biased when the reward is not position-based
(a cascade, where a slot's reward depends on the posts above it).

    1. examination_weights       beta from the log (below), with standard errors
    2. logged_marginals_by_slot  the logging policy's marginal of each logged post at every slot,
                                 [R, S, S], once per log (slate_offline.policy_marginals)
    3. with_exposures            target_exposure and logging_exposure per logged slot; the
                                 target's side is slate_decisions' target_marginal_by_slot
    4. add_exposures             1-3 for the frames of every policy on the same log, the call of
                                 recsim/ope/offline.py; estimators.ESTIMATORS["pbm"] reads them

Examination weights from the log. With known logging marginals, the mean over requests of
sum_a r(a, k) / mu(a, k | x) estimates beta_k * sum_a theta_a(x), where the sum runs over the
request's candidates: the same for every slot when the logging policy can put every candidate
at every slot (the world's epsilon-uniform exploration does). One post is logged per slot, so
beta_k / beta_1 is the ratio of the mean of r_k / logging_marginal_k to that of slot 1. beta only
matters up to scale: it is returned with beta_1 = 1. Its sampling error is not in pbm's
interval (the bootstrap holds beta fixed); `examination_weights` reports it (delta method,
clustered by member).

Not here: the pseudo-inverse estimator (Swaminathan et al. 2017). It is built for a slate-level
reward with additive slot contributions; our log has every slot's reward, under which iips is
unbiased with the same assumption. And its Gamma = E_mu[1_s 1_s^T] needs the logging policy's
pairwise (post, slot) marginals, a (S C) x (S C) matrix per request (400 x 400 here), which a
Plackett-Luce logging policy does not give in closed form beyond slot 2; the pseudo-inverse of a
64-sample Monte Carlo estimate of it is singular and biased.

Shape legend: R requests, S slots, C candidates per request.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import polars as pl

from recsim.ope.slate_frames import check_columns, padded_log
from recsim.ope.slate_offline import at_logged, policy_marginals
from recsim.world.slates import SlatePolicy

log = logging.getLogger(__name__)

BY_SLOT = "target_marginal_by_slot"  # slate_offline.slate_decisions' column: Array[S]


@dataclass(frozen=True)
class ExaminationWeights:
    """beta [S] with beta[0] = 1 (slot 1), and each one's standard error [S] (0 at slot 1)."""

    beta: np.ndarray
    std_error: np.ndarray


def _slot_matrix(frame: pl.DataFrame, source: str, value: pl.Expr) -> np.ndarray:
    """[R, S] `value` per request (rows) and position (columns), after checking that every
    request has the slots 1..S once."""
    rows = frame.sort("request_id", "position")
    n_slots = int(rows["position"].max())
    slots = rows.group_by("request_id").agg(
        ok=(pl.len() == n_slots) & (pl.col("position") == pl.int_range(1, pl.len() + 1)).all())
    bad = slots.filter(~pl.col("ok"))
    if bad.height:
        raise ValueError(f"{source}: column 'position': {bad.height} request(s) without exactly "
                         f"the slots 1..{n_slots} (first: {bad['request_id'].head(3).to_list()})")
    return rows.select(value).to_series().to_numpy().reshape(-1, n_slots)


def examination_weights(frame: pl.DataFrame, source: str = "decisions") -> ExaminationWeights:
    """beta_k / beta_1 from the log: the mean of reward_k / logging_marginal_k over requests,
    divided by slot 1's (module docstring).

    frame: one row per logged slot (request_id, member_id, position 1..S, reward,
    logging_marginal), e.g. slate_decisions'. Standard errors by the delta method for a ratio of
    means, clustered by member: se_k = sd of the member sums of (t_k - beta_k t_1) / (n mean t_1).
    """
    check_columns(frame, source, ("request_id", "member_id", "position", "reward",
                                  "logging_marginal"))
    bad = frame.filter(~(pl.col("logging_marginal") > 0) | (pl.col("logging_marginal") > 1))
    if bad.height:
        raise ValueError(f"{source}: column 'logging_marginal': {bad.height} value(s) outside "
                         f"(0, 1] (first: {bad['logging_marginal'].head(3).to_list()})")
    terms = _slot_matrix(frame, source, pl.col("reward") / pl.col("logging_marginal"))
    mean = terms.mean(axis=0)
    empty = np.flatnonzero(~(mean > 0)) + 1
    if empty.size:
        raise ValueError(f"{source}: column 'reward': no positive reward at slot(s) "
                         f"{empty[:3].tolist()}: the examination weights cannot be estimated")
    beta = mean / mean[0]
    members = _slot_matrix(frame, source, pl.col("member_id"))[:, 0]
    _, cluster = np.unique(members, return_inverse=True)
    resid = terms - beta[None, :] * terms[:, :1]  # [R, S], mean 0 at beta
    sums = np.stack([np.bincount(cluster, resid[:, k]) for k in range(terms.shape[1])], axis=1)
    std_error = np.sqrt((sums ** 2).sum(axis=0)) / (len(terms) * mean[0])
    return ExaminationWeights(beta, std_error)


def logged_marginals_by_slot(impressions: pl.DataFrame, candidates: pl.DataFrame,
                             logging_policy: SlatePolicy, requests: pl.DataFrame,
                             slate_size: int, n_samples: int = 64, seed: int = 0,
                             exact_rows: int | None = None) -> np.ndarray:
    """[R, S, S] the logging policy's marginal of the logged post of slot k at every slot j,
    for `requests` (request_id) sorted by id: exact while the enumeration fits, then
    Rao-Blackwellised Monte Carlo (slate_offline.policy_marginals). Its own random stream (the
    third child of `seed`; slate_decisions draws from the first two)."""
    padded = padded_log(impressions, candidates, requests, slate_size)
    rng = np.random.default_rng(seed).spawn(3)[2]
    marginals, _ = policy_marginals(logging_policy, padded.logging_score, slate_size, n_samples,
                                    rng, exact_rows)
    return at_logged(marginals, padded.shown)


def exposures(logging_by_slot: np.ndarray, target_by_slot: np.ndarray,
              logging_marginal: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(logging_exposure, target_exposure) [R, S]: sum_j beta_j * marginal of the logged post of
    slot k at slot j, for each policy ([R, S, S] each). At the logged slot itself the logging
    side takes `logging_marginal` [R, S] (the one iips uses: exact or importance-sampled, never
    0), so that a Monte Carlo 0 there cannot leave a logged post without exposure."""
    n_slots = len(beta)
    logging = logging_by_slot.copy()
    diag = np.arange(n_slots)
    logging[:, diag, diag] = logging_marginal
    return logging @ beta, target_by_slot @ beta


def with_exposures(frame: pl.DataFrame, logging_by_slot: np.ndarray, beta: np.ndarray,
                   source: str = "decisions") -> pl.DataFrame:
    """`frame` (slate_decisions', one row per logged slot, sorted by request and position) with
    logging_exposure and target_exposure, the columns of estimators.ESTIMATORS["pbm"]."""
    check_columns(frame, source, ("request_id", "position", "logging_marginal", BY_SLOT))
    n_slots = len(beta)
    expected = (frame.height // n_slots, n_slots, n_slots)
    if frame.height % n_slots or logging_by_slot.shape != expected:
        raise ValueError(f"logging_by_slot: expected shape {expected} (requests, slots, slots) "
                         f"for {frame.height} rows of {source}, got {logging_by_slot.shape}")
    target = frame[BY_SLOT].to_numpy().reshape(expected)
    margin = frame["logging_marginal"].to_numpy().reshape(expected[:2])
    logging, target_exp = exposures(logging_by_slot, target, margin, beta)
    bad = ~(logging > 0)
    if bad.any():
        first = frame.filter(pl.Series(bad.ravel())).select("request_id", "position").head(3)
        raise ValueError(f"{source}: column 'logging_marginal': {int(bad.sum())} logged slot(s) "
                         f"with no logging exposure (first (request_id, position): "
                         f"{first.rows()})")
    return frame.with_columns(logging_exposure=pl.Series(logging.ravel()),
                              target_exposure=pl.Series(target_exp.ravel()))


def add_exposures(frames: dict[str, pl.DataFrame], impressions: pl.DataFrame,
                  candidates: pl.DataFrame, logging_policy: SlatePolicy, requests: pl.DataFrame,
                  slate_size: int, n_samples: int = 64, seed: int = 0
                  ) -> tuple[dict[str, pl.DataFrame], ExaminationWeights]:
    """Every policy's slate_decisions frame (the same logged rows) with its exposures, and the
    examination weights, estimated once from the log (the first frame's rewards and logging
    marginals, which every frame shares)."""
    first = next(iter(frames.values()))
    shared = ("request_id", "position", "reward", "logging_marginal")
    for role, frame in frames.items():
        if not frame.select(shared).equals(first.select(shared)):
            raise ValueError(f"{role} decisions: columns {list(shared)} differ from the first "
                             "frame's: the policies must be evaluated on the same logged slots")
    weights = examination_weights(first)
    log.info("examination weights from the log (slot 1 = 1): %s (standard errors %s)",
             np.round(weights.beta, 3).tolist(), np.round(weights.std_error, 3).tolist())
    by_slot = logged_marginals_by_slot(impressions, candidates, logging_policy, requests,
                                       slate_size, n_samples, seed)
    return ({role: with_exposures(frame, by_slot, weights.beta, f"{role} decisions")
             for role, frame in frames.items()}, weights)
