"""The offline A/B of a run, in three steps on the evaluation period's logged requests:

    decide_top_slot   each policy's ranker scores the logged candidates; its action distribution
                      over the top slot (deterministic or softmax at the policy temperature)
    estimate_offline  every estimator per policy, paired lifts with the member bootstrap,
                      per-segment lifts, the logging policy on its own log, importance weights
    ground_truth      both policies served online to the world's user model (the true lift)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from recsim.ope import ab, estimators, policies
from recsim.ope.ab import Lift, SegmentLift
from recsim.ope.bootstrap import Estimate
from recsim.ope.config import SimConfig
from recsim.world import rewards

if TYPE_CHECKING:
    from ranker.train import Scores

ROLES = ("control", "treatment")
# A ranker's view of candidate rows: ranker.train.Scores (score [N] to rank by, click_prob [N]).
Scorer = Callable[[pl.DataFrame], "Scores"]


@dataclass
class TopSlotDecisions:
    decisions: pl.DataFrame  # the logged top-slot rows (request, member, post, propensity, reward)
    requests: pl.DataFrame  # (request_id, member_id, timestamp) the policies are evaluated on
    action_probs: dict[str, pl.DataFrame]  # role -> (request_id, post_id, prob)
    click_prob: dict[str, pl.DataFrame]  # role -> (request_id, post_id, q) over every candidate


def decide_top_slot(test_impressions: pl.DataFrame, candidates: pl.DataFrame,
                    scorers: dict[str, Scorer], sim: SimConfig, seed: int) -> TopSlotDecisions:
    """Each role's ranker scores the logged candidates of the evaluation requests (at slot 1);
    its policy ranks by that score; its click head is kept for the DM family."""
    decisions = policies.logged_top_slot(test_impressions,
                                         rewards.observed(sim.metric, sim.reward_weights))
    if sim.max_eval_requests and decisions.height > sim.max_eval_requests:
        decisions = decisions.sample(sim.max_eval_requests, seed=seed).sort("request_id")
    requests = decisions.select("request_id", "member_id", "timestamp")
    rows = candidates.join(requests, on="request_id").with_columns(position=pl.lit(1, dtype=pl.Int32))
    action_probs, click_prob = {}, {}
    for role, scorer in scorers.items():
        scores = scorer(rows)
        click_prob[role] = rows.select("request_id", "post_id").with_columns(q=scores.click_prob)
        action_probs[role] = policies.top_slot_probabilities(rows.with_columns(score=scores.score),
                                                             sim.policy_temperature)
        policies.check_support(action_probs[role], candidates, f"{role} policy")
    return TopSlotDecisions(decisions, requests, action_probs, click_prob)


@dataclass
class OfflineResult:
    lifts: list[Lift]  # one per estimator, in sim.estimators' order
    segments: list[SegmentLift]
    logging_value: Estimate  # the logging policy on its own log (IPS with target = propensity)
    weights: dict[str, np.ndarray]  # role -> importance weights target_prob / propensity


def estimate_offline(decided: TopSlotDecisions, sim: SimConfig, segments: pl.DataFrame,
                     seed: int) -> OfflineResult:
    """Every estimator per policy and the paired lifts; `segments` from ab.member_segments."""
    boot = estimators.Bootstrap(sim.n_bootstrap, seed, sim.alpha)
    framed = {role: estimators.check_decisions(
        policies.with_reward_model(policies.with_target(decided.decisions, probs), probs,
                                   decided.click_prob[sim.reward_model]), f"{role} decisions")
        for role, probs in decided.action_probs.items()}
    lifts = list(ab.offline_lifts(sim.estimators, framed["control"], framed["treatment"], boot,
                                  ray_shards=sim.ray_shards).values())
    by_segment = ab.segment_lifts(sim.segment_estimator, framed["control"], framed["treatment"],
                                  segments, boot)
    on_policy = framed["control"].with_columns(target_prob=pl.col("propensity"))
    logging_value, _ = estimators.estimate("ips", on_policy, boot, sim.alpha)
    weights = {role: (f["target_prob"] / f["propensity"]).to_numpy() for role, f in framed.items()}
    return OfflineResult(lifts, by_segment, logging_value, weights)


@dataclass
class TrueValues:
    control: float  # expected engagement per request, served online
    treatment: float
    logging: float  # the logged top-slot posts themselves

    @property
    def lift(self) -> float:
        return self.treatment / self.control - 1


def ground_truth(truth, decided: TopSlotDecisions, metric: str,
                 reward_weights: dict | None = None) -> TrueValues:
    """Both policies (and the logged actions) served to the world's user model `truth`."""
    def value(action_probs: pl.DataFrame) -> float:
        return ab.true_value(truth, action_probs, decided.requests, metric, reward_weights)

    logged = decided.decisions.select("request_id", "post_id", prob=pl.lit(1.0))
    return TrueValues(value(decided.action_probs["control"]),
                      value(decided.action_probs["treatment"]), value(logged))
