"""The A/B of a run on the evaluation period's requests, in three steps:

    serve_policies    each policy's funnel (recsim/ope/funnel.py): its candidates (the logged
                      ones, or FAISS top-K over the posts live at the request), its ranker's
                      scores, its slate; the reward model's click probabilities
    estimate_offline  from the log: the top-slot family (the policy's first slot against the
                      logged first slot) and the slate estimators (every logged slot), each
                      with the policy's support; paired lifts with the member bootstrap
    ground_truth      the simulated online A/B: the expected engagement of each policy's whole
                      slate under the world's user model (the true lift), and an online test
                      as it would be run (members split by hash, outcomes sampled)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from recsim.ope import (ab, estimators, funnel, intervals, online, policies, reward_model,
                        slate_offline, slate_pbm, support, verdict)
from recsim.ope.ab import Lift, SegmentLift
from recsim.ope.bootstrap import Estimate
from recsim.ope.config import SimConfig
from recsim.world import rewards

if TYPE_CHECKING:
    from ranker.retrieval.candidates import RetrievalSource
    from ranker.train import Scores

ROLES = ("control", "treatment")
Scorer = Callable[[pl.DataFrame], "Scores"]  # rows -> ranker.train.Scores (score, click_prob)


@dataclass
class Served:
    """Step 5: both policies served to the evaluation requests."""

    requests: pl.DataFrame  # (request_id, member_id, timestamp)
    decisions: pl.DataFrame  # the logged top-slot rows (request, member, post, propensity, reward)
    outputs: dict[str, funnel.FunnelOutput]  # role -> candidates, slates, served slate, seconds
    reward_q: pl.DataFrame | None  # (request_id, post_id, q): the reward model's click
    #                         probability over every candidate of either policy and of the log;
    #                         None without a reward model (model-based estimators skipped)
    temperature: dict[str, float]  # role -> its slate temperature
    reward_model: object = None  # the fitted reward model (recsim/ope/reward_model.py) or None


def evaluation_requests(test_impressions: pl.DataFrame, sim: SimConfig, seed: int
                        ) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(logged top-slot decisions, requests) of the evaluation period, sampled down to
    sim.max_eval_requests when set."""
    decisions = policies.logged_top_slot(test_impressions,
                                         rewards.observed(sim.metric, sim.reward_weights))
    if sim.max_eval_requests and decisions.height > sim.max_eval_requests:
        decisions = decisions.sample(sim.max_eval_requests, seed=seed).sort("request_id")
    return decisions, decisions.select("request_id", "member_id", "timestamp")


def serve_policies(test_impressions: pl.DataFrame, candidates: pl.DataFrame,
                   scorers: dict[str, Scorer], sources: dict[str, "RetrievalSource | None"],
                   sim: SimConfig, slate_size: int, seed: int, reward_model=None) -> Served:
    """Each role's funnel over the evaluation requests; `sources[role]` is its retrieval source
    (None for the `logged` source); the reward model is `scorers[sim.reward_model]`."""
    decisions, requests = evaluation_requests(test_impressions, sim, seed)
    roles = {"control": sim.control, "treatment": sim.treatment}
    outputs, temperature = {}, {}
    for role, policy in roles.items():
        cands, seconds = _candidates(policy, sources[role], requests, candidates, slate_size)
        temperature[role] = sim.policy_temperature if policy.temperature is None else policy.temperature
        outputs[role] = funnel.serve(cands, requests, scorers[role], slate_size,
                                     temperature[role], seed, sim.slate_samples)
        outputs[role].seconds = {"candidates": seconds, **outputs[role].seconds}
    if sim.reward_model not in scorers:  # no reward model (a team's logs): no DM / DR / SNDR
        return Served(requests, decisions, outputs, None, temperature, None)
    # The reward model scores each (request, post) once, whichever policy or the log has it.
    union = pl.concat([*(out.candidates.select("request_id", "post_id") for out in outputs.values()),
                       funnel.logged_candidates(candidates, requests).select("request_id", "post_id")]
                      ).unique(maintain_order=True)
    q, _ = funnel.score_rows(union, requests, scorers[sim.reward_model])
    reward_q = q.select("request_id", "post_id", q="click_prob")
    return Served(requests, decisions, outputs, reward_q, temperature, reward_model)


def _candidates(policy, source, requests: pl.DataFrame, candidates: pl.DataFrame,
                slate_size: int) -> tuple[pl.DataFrame, float]:
    """The policy's candidates (request_id, post_id, logged) and the seconds they took."""
    if policy.source == "logged":
        return funnel.logged_candidates(candidates, requests), 0.0
    found, seconds = source.candidates(requests, policy.top_k, policy.exclude_seen)
    short = found.group_by("request_id").len().filter(pl.col("len") < slate_size)
    missing = requests.height - found["request_id"].n_unique()
    if short.height or missing:
        raise ValueError(f"sim policy {policy.name}: retrieval found fewer than the slate's "
                         f"{slate_size} live posts for {short.height + missing} request(s)")
    return funnel.mark_logged(found, candidates), seconds


@dataclass
class OfflineResult:
    lifts: list[Lift]  # top-slot estimators (sim.estimators), then slate estimators
    segments: list[SegmentLift]
    logging_value: Estimate  # the logging policy on its own log (IPS with target = propensity)
    weights: dict[str, np.ndarray]  # role -> top-slot importance weights
    support: dict[str, dict]  # role -> {"top_slot": share, "slate": support.decisions_support(...)}
    uniform_logging: bool  # the logged first slots' propensities are 1 / candidates
    intervals: dict[str, dict[str, tuple[float, float]]]  # estimator -> extra method -> (lo, hi)


def _top_slot_frame(served: Served, role: str) -> pl.DataFrame:
    """The logged first slots with the role's first-slot probabilities, the reward model's
    predictions and the mass the policy puts outside the logged candidates."""
    out = served.outputs[role]
    first = out.slates.filter(pl.col("position") == 1).select("request_id", "post_id", "prob")
    outside = (first.join(out.candidates.select("request_id", "post_id", "logged"),
                          on=["request_id", "post_id"], how="left")
               .group_by("request_id").agg(unsupported_mass=(
                   pl.col("prob") * (~pl.col("logged").fill_null(False))).sum()))
    frame = policies.with_target(served.decisions, first)
    if served.reward_q is not None:
        frame = policies.with_reward_model(frame, first, served.reward_q)
    frame = frame.join(outside, on="request_id", how="left", maintain_order="left")
    return estimators.check_decisions(frame, f"{role} decisions")


def estimate_offline(served: Served, sim: SimConfig, impressions: pl.DataFrame,
                     candidates: pl.DataFrame, logging_policy, segments: pl.DataFrame,
                     slate_size: int, seed: int) -> OfflineResult:
    """Every estimator per policy and the paired lifts; `segments` from ab.member_segments
    (None: no per-segment lifts). `logging_policy` None (its form unknown): no slate frames, so
    sim.slate_estimators must be empty; the slate's support is then read from its marginals."""
    boot = estimators.Bootstrap(sim.n_bootstrap, seed, sim.alpha, interval=sim.interval)
    framed = {role: _top_slot_frame(served, role) for role in ROLES}
    by_name = _model_based_lifts(served, sim, framed, boot)  # with the model's refits
    rest = [name for name in sim.estimators if name not in by_name]
    if rest:
        by_name |= ab.offline_lifts(rest, framed["control"], framed["treatment"], boot,
                                    ray_shards=sim.ray_shards)
    lifts = [by_name[name] for name in sim.estimators]
    slate_frames = _slate_frames(served, sim, impressions, candidates, logging_policy,
                                 slate_size, seed)
    if sim.slate_estimators:
        lifts += ab.offline_lifts(sim.slate_estimators, slate_frames["control"],
                                  slate_frames["treatment"], boot).values()
    by_segment = [] if segments is None else ab.segment_lifts(
        sim.segment_estimator, framed["control"], framed["treatment"], segments, boot)
    on_policy = framed["control"].with_columns(target_prob=pl.col("propensity"),
                                               unsupported_mass=pl.lit(0.0))  # the log itself
    logging_value, _ = estimators.estimate("ips", on_policy, boot, sim.alpha)
    weights = {role: (f["target_prob"] / f["propensity"]).to_numpy() for role, f in framed.items()}
    shares = {role: {"top_slot": 1.0 - float(framed[role]["unsupported_mass"].fill_null(0).mean()),
                     "slate": support.decisions_support(slate_frames[role]) if slate_frames
                     else support.support(served.outputs[role].slates, candidates)}
              for role in ROLES}
    uniform = verdict.logging_is_uniform(served.decisions, candidates)
    extra = _extra_intervals(sim, framed, slate_frames, seed)
    return OfflineResult(lifts, by_segment, logging_value, weights, shares, uniform, extra)


def _slate_frames(served: Served, sim: SimConfig, impressions: pl.DataFrame,
                  candidates: pl.DataFrame, logging_policy, slate_size: int, seed: int) -> dict:
    """role -> its slate_offline.slate_decisions frame (every logged slot); {} without a
    logging policy."""
    if logging_policy is None:
        if sim.slate_estimators:
            raise ValueError(f"sim.slate_estimators: {list(sim.slate_estimators)} need the "
                             "logging policy's form (data.logging_temperature)")
        return {}
    logged = slate_offline.logged_slot_marginals(impressions, candidates, logging_policy,
                                                 served.requests, slate_size, sim.slate_samples,
                                                 seed)  # the log's, shared by both policies
    frames = {role: slate_offline.slate_decisions(
        impressions, candidates, logging_policy,
        served.outputs[role].candidates.select("request_id", "post_id", "score"),
        served.temperature[role], slate_size, rewards.observed(sim.metric, sim.reward_weights),
        sim.slate_samples, seed, logging_marginal=logged) for role in ROLES}
    if "pbm" in sim.slate_estimators:  # examination weights from the log; every slot's marginals
        frames, _ = slate_pbm.add_exposures(frames, impressions, candidates, logging_policy,
                                            served.requests, slate_size, sim.slate_samples, seed)
    return frames


def _model_based_lifts(served: Served, sim: SimConfig, framed: dict, boot) -> dict:
    """DM / DR / SNDR with the fitted reward model's refits in their intervals
    (reward_model.model_based_lifts); {} when the reward model is a role's ranker."""
    names = [n for n in sim.estimators if n in reward_model.MODEL_BASED]
    if served.reward_model is None or not names:
        return {}
    first = {role: served.outputs[role].slates.filter(pl.col("position") == 1)
             .select("request_id", "post_id", "prob") for role in ROLES}
    return reward_model.model_based_lifts(framed["control"], framed["treatment"],
                                          first["control"], first["treatment"],
                                          served.reward_model, boot, names=names)


def _extra_intervals(sim: SimConfig, framed: dict, slate_frames: dict, seed: int) -> dict:
    """estimator -> method -> (lo, hi) of its paired lift, for each of sim.extra_intervals."""
    out: dict[str, dict] = {}
    for method in (m for m in sim.extra_intervals if m != sim.interval):
        for names, frames in ((sim.estimators, framed), (sim.slate_estimators, slate_frames)):
            if not names:
                continue
            found = intervals.offline_lift_intervals(list(names), frames["control"],
                                                     frames["treatment"], method,
                                                     sim.n_bootstrap, seed, sim.alpha)
            for name, iv in found.items():
                out.setdefault(name, {})[method] = (iv.low, iv.high)
    return out


@dataclass
class TrueValues:
    """The simulated online A/B: the truth the offline estimates are judged against."""

    slate: online.TrueSlateValues  # expected whole-slate engagement per action, and the lift
    online_ab: online.OnlineAB  # the sampled online test at this traffic
    top_slot: dict[str, float]  # control / treatment / logging: expected first-slot metric
    by_segment: list[dict]  # the true slate lift per member segment (tenure, activity, ...)

    @property
    def lift(self) -> float:
        return self.slate.lift["metric"]

    @property
    def top_slot_lift(self) -> float:
        return self.top_slot["treatment"] / self.top_slot["control"] - 1


def ground_truth(truth, served: Served, sim: SimConfig, seed: int,
                 segments: pl.DataFrame | None = None) -> TrueValues:
    """Both policies' slates served to the world's user model `truth`: the expected engagement,
    the sampled online test, the expected first slot (what top-slot estimators estimate), and
    the true lift per member segment (`segments`: member_id and one column per dimension)."""
    out, req = served.outputs, served.requests
    slate = online.true_lift(truth, out["control"].slates, out["treatment"].slates, req,
                             sim.metric, sim.reward_weights)
    test = online.simulate_online_ab(truth, out["control"].served, out["treatment"].served, req,
                                     sim.metric, sim.reward_weights, seed, sim.alpha,
                                     sim.n_bootstrap)

    def first_slot(frame: pl.DataFrame) -> float:
        rows = frame.filter(pl.col("position") == 1).select("request_id", "post_id", "prob")
        return ab.true_value(truth, rows, req, sim.metric, sim.reward_weights)

    logged = served.decisions.select("request_id", "post_id", position=pl.lit(1, dtype=pl.Int32),
                                     prob=pl.lit(1.0))
    top = {"control": first_slot(out["control"].slates),
           "treatment": first_slot(out["treatment"].slates), "logging": first_slot(logged)}
    return TrueValues(slate, test, top, _segment_truth(truth, served, sim, segments))


def _segment_truth(truth, served: Served, sim: SimConfig, segments: pl.DataFrame | None) -> list[dict]:
    """The true whole-slate lift of each segment value's requests."""
    if segments is None:
        return []
    out, req = [], served.requests.join(segments, on="member_id", how="left")
    for dim in (c for c in segments.columns if c != "member_id"):
        for value in sorted(req[dim].drop_nulls().unique().to_list()):
            part = req.filter(pl.col(dim) == value).select("request_id", "member_id", "timestamp")
            ids = part.select("request_id")
            values = online.true_lift(
                truth, served.outputs["control"].slates.join(ids, on="request_id"),
                served.outputs["treatment"].slates.join(ids, on="request_id"), part,
                sim.metric, sim.reward_weights)
            out.append({"segment": dim, "value": value, "requests": part.height,
                        "control": values.control["metric"], "treatment": values.treatment["metric"],
                        "lift": values.lift["metric"]})
    return out
