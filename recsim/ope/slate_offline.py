"""Whole-slate offline estimates from the log: the input of the slate estimators (iips, rips, pbm
in recsim/ope/estimators.py; pbm's exposures: recsim/ope/slate_pbm.py) for any target policy
given as scores, and how much of that policy the log supports.

A target policy is `policy_scores` (request_id, post_id, score: every candidate it considered
for the request, logged or not, e.g. retrieved by FAISS), a `temperature` and a slate size S:

    temperature 0    the slate is the top S by score, ties to the lower post_id
    temperature > 0  Plackett-Luce over softmax(score / temperature) (recsim.world.slates), with
                     an optional epsilon-uniform exploration over its own candidates

Step by step (`slate_decisions`; all steps vectorised over requests, in chunks of `chunk`):

    1. check_*             every input, with a ValueError that names the frame and the column
                           (recsim/ope/slate_frames.py)
    2. pad                 per request the union of its logged candidates and the policy's, in
                           post_id order, as [R, C] score matrices: the logging scores (-inf off
                           the log's candidates) and the policy's (-inf off its own), and the
                           logged slate as candidate columns [R, S]
    3. logging_marginals   the logging policy's marginal of each logged post at its slot [R, S]
    4. target_slate        the target's marginals [R, S, C]; of the logged post at its slot
                           [R, S]; its conditional given the logged slots above [R, S]
    5. slate_decisions     one row per logged shown slot, ready for estimators.evaluate
    6. slate_marginals     the target's (request_id, post_id, position, prob), for the truth
                           (recsim.ope.ab.true_value) and for `support`
    7. support             (recsim/ope/support.py) the share of the target's slate on posts
                           the logging policy could have shown; below 1 the estimates are
                           biased and say so

Unavailable candidates: recsim.world.slates starts every slate with all C columns available, so
padding with -inf scores alone would still get epsilon-uniform mass. `on_finite` wraps a policy
so that a column whose score is not finite is never available (probability 0 at every slot).

Exact or Monte Carlo. Marginals are enumerated exactly, slot after slot, over every prefix of
positive probability (zero-probability prefixes are dropped, so a deterministic policy keeps a
single prefix per request and is exact at every slot), while a slot needs at most `exact_rows`
prefixes per request on average (default n_samples: the Monte Carlo's own cost). Slot 1 is
always exact; the slots after the budget runs out are Monte Carlo with n_samples prefixes per
request: the logging marginal of the logged post by slates.logged_marginals (importance
sampling, unbiased and never 0), the target's marginals by slates.slot_marginals
(Rao-Blackwellised, unbiased). With C = 20 and n_samples = 64: slots 1-2 exact, deeper MC for
a stochastic policy; every slot exact for temperature 0 without epsilon. Conditionals
(propensity, target_prob) are always exact.

Shape legend: R requests, S slots, C candidates per request (the padded union of the logged
candidates and the policy's), N enumerated prefixes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import polars as pl

# The frames' checks and padding live in slate_frames; KEY, check_columns, pad and Padded are
# also imported from here (support.py, funnel.py).
from recsim.ope.slate_frames import (KEY, Padded, check_columns, check_policy,  # noqa: F401
                                     int_keys, logged_rows, pad, padded_log)
from recsim.world import slates
from recsim.world.slates import SlatePolicy

log = logging.getLogger(__name__)

# --- the policies on their own candidates -----------------------------------------------------


def on_finite(policy: SlatePolicy) -> SlatePolicy:
    """`policy` restricted to the columns with a finite score: the others are never available,
    so they get probability 0 at every slot (epsilon-uniform mass included)."""
    def bind(scores: np.ndarray) -> slates.SlotProbabilities:
        valid = np.isfinite(scores)
        inner = policy(np.where(valid, scores, 0.0))
        return lambda available: inner(available & valid)
    return bind


def _enumerated_marginals(policy: SlatePolicy, scores: np.ndarray, n_slots: int,
                          max_rows: int) -> tuple[np.ndarray, int]:
    """[R, S, C] exact marginals of the first k slots (k returned, >= 1; later slots 0).

    Rows are prefixes of positive probability, sorted by request: each slot's marginal is the
    prefix-weighted sum of the policy's probabilities; the next slot's prefixes are the rows'
    children with positive probability, while there are at most `max_rows` [N] of them.
    """
    n_req, n_cand = scores.shape
    req, weight = np.arange(n_req), np.ones(n_req)
    available = np.ones((n_req, n_cand), dtype=bool)
    out = np.zeros((n_req, n_slots, n_cand))
    for slot in range(n_slots):
        probs = policy(scores[req])(available)  # [N, C]
        starts = np.flatnonzero(np.r_[True, req[1:] != req[:-1]])
        out[:, slot] = np.add.reduceat(weight[:, None] * probs, starts, axis=0)
        if slot == n_slots - 1:
            break
        parent, col = np.nonzero(probs > 0)  # row-major: children stay sorted by request
        if len(parent) > max_rows:
            return out, slot + 1
        weight = weight[parent] * probs[parent, col]
        available = available[parent]
        available[np.arange(len(parent)), col] = False
        req = req[parent]
    return out, n_slots


def _budget(n_req: int, n_samples: int, exact_rows: int | None) -> int:
    return n_req * (n_samples if exact_rows is None else exact_rows)


def _log_exactness(what: str, n_exact: int, n_slots: int, n_samples: int) -> None:
    if n_exact >= n_slots:
        log.info("%s: exact at every slot (enumerated prefixes)", what)
    else:
        log.info("%s: exact at slots 1-%d, Monte Carlo (%d samples per request) at slots %d-%d",
                 what, n_exact, n_samples, n_exact + 1, n_slots)


def logging_marginals(policy: SlatePolicy, scores: np.ndarray, shown: np.ndarray,
                      n_samples: int, rng: np.random.Generator, exact_rows: int | None = None,
                      chunk: int = 1024) -> np.ndarray:
    """[R, S] the logging policy's marginal of the logged post of each slot at that slot.

    scores [R, C] (-inf: not a candidate), shown [R, S] columns. Exact while the enumeration
    fits (module docstring), then slates.logged_marginals (importance sampling, never 0).
    """
    policy = on_finite(policy)
    n_slots = shown.shape[1]
    out, n_exact = np.empty(shown.shape), n_slots
    for start in range(0, len(scores), chunk):
        sc, sh = scores[start:start + chunk], shown[start:start + chunk]
        budget = _budget(len(sc), n_samples, exact_rows)
        marg, k = _enumerated_marginals(policy, sc, n_slots, budget)
        part = np.take_along_axis(marg, sh[:, :, None], axis=2)[:, :, 0]
        if k < n_slots:
            part[:, k:] = slates.logged_marginals(policy, sc, sh, n_samples, rng,
                                                  from_slot=k)[:, k:]
        out[start:start + chunk], n_exact = part, min(n_exact, k)
    _log_exactness("logging marginals", n_exact, n_slots, n_samples)
    return out


def policy_marginals(policy: SlatePolicy, scores: np.ndarray, n_slots: int, n_samples: int,
                     rng: np.random.Generator, exact_rows: int | None = None,
                     chunk: int = 1024) -> tuple[np.ndarray, int]:
    """[R, S, C] each candidate's probability at each slot, and the number of exact slots.

    scores [R, C] (-inf: not a candidate). Exact while the enumeration fits (module
    docstring), then slates.slot_marginals (Rao-Blackwellised Monte Carlo).
    """
    policy = on_finite(policy)
    out, n_exact = np.empty((len(scores), n_slots, scores.shape[1])), n_slots
    for start in range(0, len(scores), chunk):
        sc = scores[start:start + chunk]
        budget = _budget(len(sc), n_samples, exact_rows)
        marg, k = _enumerated_marginals(policy, sc, n_slots, budget)
        if k < n_slots:
            marg[:, k:] = slates.slot_marginals(policy, sc, n_slots, n_samples, rng)[:, k:]
        out[start:start + chunk], n_exact = marg, min(n_exact, k)
    return out, n_exact


def target_conditionals(policy: SlatePolicy, scores: np.ndarray, shown: np.ndarray) -> np.ndarray:
    """[R, S] the policy's probability of each logged post at its slot given the logged slots
    above (exact); 0 where the post is not among its candidates (score -inf) and at every slot
    after a logged prefix it cannot produce (its conditional is then undefined; rips weighs
    those slots 0 either way)."""
    cond = slates.logged_conditionals(on_finite(policy), scores, shown)
    return np.where(np.cumprod(cond > 0, axis=1, dtype=bool), cond, 0.0)


def at_logged(marginals: np.ndarray, shown: np.ndarray) -> np.ndarray:
    """[R, S, S] the marginal of the logged post of slot k (axis 1) at every slot j (axis 2),
    from a policy's marginals [R, S, C] and the logged slates shown [R, S]. Its diagonal is
    the post at its own slot (what iips weighs); pbm sums every slot (recsim/ope/slate_pbm.py)."""
    idx = np.broadcast_to(shown[:, None, :], marginals.shape[:2] + shown.shape[1:])
    return np.take_along_axis(marginals, idx, axis=2).transpose(0, 2, 1)


@dataclass
class TargetSlate:
    """The target policy on the logged slates. R requests, S slots, C candidates."""

    marginals: np.ndarray  # [R, S, C] each candidate at each slot
    target_marginal: np.ndarray  # [R, S] the logged post at its slot
    target_prob: np.ndarray  # [R, S] the logged post given the logged slots above
    n_exact: int  # slots 1..n_exact of `marginals` are exact, the rest Monte Carlo


def target_slate(policy: SlatePolicy, scores: np.ndarray, shown: np.ndarray, n_samples: int,
                 rng: np.random.Generator, exact_rows: int | None = None) -> TargetSlate:
    """The target policy (scores [R, C], -inf off its candidates) on the logged slates shown
    [R, S]: its marginals, those of the logged posts, and its conditionals."""
    marg, n_exact = policy_marginals(policy, scores, shown.shape[1], n_samples, rng, exact_rows)
    _log_exactness("target marginals", n_exact, shown.shape[1], n_samples)
    picked = np.diagonal(at_logged(marg, shown), axis1=1, axis2=2).copy()
    return TargetSlate(marg, picked, target_conditionals(policy, scores, shown), n_exact)



# --- 5. the decisions, 6. the target's slates -------------------------------------------------


def target_policy(temperature: float, epsilon: float = 0.0) -> SlatePolicy:
    """The target's slate policy: Plackett-Luce at `temperature` (0: top S by score, ties to the
    lower column, i.e. the lower post_id after `pad`); the array functions above restrict it to
    its own candidates (finite scores)."""
    return slates.plackett_luce(temperature, epsilon)


def slate_decisions(impressions: pl.DataFrame, candidates: pl.DataFrame,
                    logging_policy: SlatePolicy, policy_scores: pl.DataFrame, temperature: float,
                    slate_size: int, reward_expr: str | pl.Expr = "click", n_samples: int = 64,
                    seed: int = 0, epsilon: float = 0.0, exact_rows: int | None = None,
                    logging_marginal: np.ndarray | None = None) -> pl.DataFrame:
    """One row per logged shown slot of the requests in `policy_scores`, for
    estimators.evaluate(["iips", "rips"], frame, Bootstrap(...)).

    Args:
        impressions: the log (request_id, member_id, post_id, position 1..S, propensity (the
            logged conditional), outcome columns).
        candidates: (request_id, post_id, logging_score) the logging policy's candidates.
        logging_policy: the policy that logged them (world.logging_policy(world_cfg)).
        policy_scores: (request_id, post_id, score) every candidate the target considered.
        temperature, epsilon: the target's Plackett-Luce (0: top S by score, ties to the lower
            post_id); epsilon-uniform exploration over its candidates (default none).
        reward_expr: a column of `impressions` or an expression (recsim.world.rewards.observed).
        n_samples, seed, exact_rows: Monte Carlo prefixes per request and their seed; the
            enumeration budget (module docstring).
        logging_marginal: [R, S] the logging policy's marginals of the logged slates, requests
            sorted by id (`logged_slot_marginals`): they depend on the log only, so policies
            evaluated on the same requests share them; None: computed here.
    Returns:
        request_id, member_id, post_id, position, propensity, reward, logging_marginal,
        target_marginal, target_prob, unsupported_slot_mass (the target's mass at this slot on
        posts outside the request's logged candidates), unsupported_mass (its mean over the
        request's slots: the decision is the slate), target_marginal_by_slot (Array[S]: the
        target's marginal of the row's post at each slot 1..S, for pbm), sorted by request
        and position.
    """
    check_policy(policy_scores, temperature, slate_size, epsilon)
    requests = policy_scores.select(pl.col("request_id").cast(pl.Int64)).unique()
    if isinstance(reward_expr, str):
        check_columns(impressions, "impressions", (reward_expr,))
    impressions, candidates = int_keys(impressions), int_keys(candidates)
    rows = logged_rows(impressions, candidates, requests, slate_size)
    padded = pad(policy_scores, candidates, rows)
    logging_rng, target_rng = np.random.default_rng(seed).spawn(2)
    if logging_marginal is None:
        logging_marginal = logging_marginals(logging_policy, padded.logging_score, padded.shown,
                                             n_samples, logging_rng, exact_rows)
    elif logging_marginal.shape != padded.shown.shape:
        raise ValueError(f"logging_marginal: expected shape {padded.shown.shape} (requests, "
                         f"slots), got {logging_marginal.shape}")
    target = target_slate(target_policy(temperature, epsilon), padded.score, padded.shown,
                          n_samples, target_rng, exact_rows)
    unlogged = ~np.isfinite(padded.logging_score)  # [R, C]
    unsupported = (target.marginals * unlogged[:, None, :]).sum(axis=2)  # [R, S]
    reward = pl.col(reward_expr) if isinstance(reward_expr, str) else reward_expr
    return rows.select(
        "request_id", "member_id", "post_id", "position", "propensity",
        reward=reward.cast(pl.Float64),
    ).with_columns(
        logging_marginal=pl.Series(logging_marginal.ravel()),
        target_marginal=pl.Series(target.target_marginal.ravel()),
        target_prob=pl.Series(target.target_prob.ravel()),
        unsupported_slot_mass=pl.Series(unsupported.ravel()),
        unsupported_mass=pl.Series(np.repeat(unsupported.mean(axis=1), slate_size)),
        target_marginal_by_slot=pl.Series(
            at_logged(target.marginals, padded.shown).reshape(-1, slate_size)),
    )


def logged_slot_marginals(impressions: pl.DataFrame, candidates: pl.DataFrame,
                          logging_policy: SlatePolicy, requests: pl.DataFrame, slate_size: int,
                          n_samples: int = 64, seed: int = 0, exact_rows: int | None = None
                          ) -> np.ndarray:
    """[R, S] the logging policy's marginal of each logged post at its slot, for `requests`
    (request_id) sorted by id: the same draws `slate_decisions` would make with this seed."""
    padded = padded_log(impressions, candidates, requests, slate_size)
    logging_rng, _ = np.random.default_rng(seed).spawn(2)
    return logging_marginals(logging_policy, padded.logging_score, padded.shown, n_samples,
                             logging_rng, exact_rows)


def slate_marginals(policy_scores: pl.DataFrame, temperature: float, slate_size: int,
                    n_samples: int = 64, seed: int = 0, epsilon: float = 0.0,
                    exact_rows: int | None = None) -> pl.DataFrame:
    """The target's (request_id, post_id, position, prob): each candidate's probability at each
    slot, marginal over the slots above (rows with prob > 0). The action_probs of
    recsim.ope.ab.true_value (the truth of the whole slate) and the input of `support`."""
    check_policy(policy_scores, temperature, slate_size, epsilon)
    padded = pad(policy_scores)
    marg, n_exact = policy_marginals(target_policy(temperature, epsilon), padded.score, slate_size,
                                     n_samples, np.random.default_rng(seed), exact_rows)
    _log_exactness("slate marginals", n_exact, slate_size, n_samples)
    r, s, c = np.nonzero(marg > 0)
    return pl.DataFrame({
        "request_id": padded.request_id[r], "post_id": padded.post_id[r, c],
        "position": (s + 1).astype(np.int32), "prob": marg[r, s, c],
    })
