"""Whole-slate offline estimates (recsim/ope/slate_offline.py): hand-computed marginals and
conditionals on a tiny log, support, and iips against the truth on the small world."""

import math

import numpy as np
import polars as pl
import pytest

from recsim.ope import ab
from recsim.ope.estimators import Bootstrap, evaluate
from recsim.ope.slate_offline import slate_decisions, slate_marginals
from recsim.ope.support import decisions_support, support, support_status
from recsim.world import slates

LN2, LN3 = math.log(2), math.log(3)
EPS = 0.3  # the tiny log's exploration: slot 1 gets 0.1 uniform per candidate, slot 2 0.15

# Two requests, three candidates each, two slots. Logging weights exp(score): request 1 posts
# 10, 11, 12 -> 1, 2, 3; request 2 posts 20, 21, 22 -> 3, 1, 2. Logged slates [12, 10], [21, 20].
CANDIDATES = pl.DataFrame({"request_id": [1, 1, 1, 2, 2, 2], "post_id": [10, 11, 12, 20, 21, 22],
                           "logging_score": [0.0, LN2, LN3, LN3, 0.0, LN2]})
# Logged conditionals: slot 1 = 0.7 w / 6 + 0.1; slot 2 = 0.7 w / (6 - w_first) + 0.15.
P1 = {12: 0.7 * 3 / 6 + 0.1, 21: 0.7 * 1 / 6 + 0.1}
P2 = {10: 0.7 * 1 / 3 + 0.15, 20: 0.7 * 3 / 5 + 0.15}
IMPRESSIONS = pl.DataFrame({
    "request_id": [1, 1, 2, 2], "member_id": [100, 100, 200, 200], "post_id": [12, 10, 21, 20],
    "position": pl.Series([1, 2, 1, 2], dtype=pl.Int32),
    "propensity": [P1[12], P2[10], P1[21], P2[20]], "click": [1, 1, 0, 1],
})
LOGGING = slates.plackett_luce(1.0, EPS)
# Logging marginal of the slot-2 posts: sum over the other first posts b of p1(b) p2(post | b).
# Request 1, post 10: b = 11 (p1 = 0.7*2/6 + 0.1, then 0.7*1/4 + 0.15), b = 12 (P1[12], P2[10]).
LM_10 = (0.7 * 2 / 6 + 0.1) * (0.7 * 1 / 4 + 0.15) + P1[12] * P2[10]
# Request 2, post 20: b = 21 (P1[21], P2[20]), b = 22 (0.7*2/6 + 0.1, then 0.7*3/4 + 0.15).
LM_20 = P1[21] * P2[20] + (0.7 * 2 / 6 + 0.1) * (0.7 * 3 / 4 + 0.15)
LOGGING_MARGINAL = [P1[12], LM_10, P1[21], LM_20]

# The target over the logged candidates: weights request 1 (10, 11, 12) -> 2, 1, 1; request 2
# (20, 21, 22) -> 2, 3, 1. Deterministic: slates [10, 11] (11 before 12: the tie goes to the
# lower post_id) and [21, 20].
TARGET = pl.DataFrame({"request_id": [1, 1, 1, 2, 2, 2], "post_id": [10, 11, 12, 20, 21, 22],
                       "score": [LN2, 0.0, 0.0, LN2, LN3, 0.0]})


def _decisions(policy_scores, temperature, **kw):
    return slate_decisions(IMPRESSIONS, CANDIDATES, LOGGING, policy_scores, temperature, 2,
                           "click", **kw)


def test_hand_computed_columns_deterministic_target():
    frame = _decisions(TARGET, 0.0)
    assert frame["logging_marginal"].to_list() == pytest.approx(LOGGING_MARGINAL)
    # Request 1 logged [12, 10], the target shows [10, 11]: no slot agrees. At slot 2 the target
    # would pick 10 after 12, but 12 first is impossible for it: the conditional is 0.
    # Request 2 logged [21, 20] = the target's slate: indicator 1 at both slots.
    assert frame["target_marginal"].to_list() == [0.0, 0.0, 1.0, 1.0]
    assert frame["target_prob"].to_list() == [0.0, 0.0, 1.0, 1.0]
    assert frame["unsupported_mass"].to_list() == [0.0] * 4
    assert frame["propensity"].to_list() == pytest.approx([P1[12], P2[10], P1[21], P2[20]])
    top = slate_marginals(TARGET, 0.0, 2).sort("request_id", "position")
    assert top.select("post_id", "position").rows() == [(10, 1), (11, 2), (21, 1), (20, 2)]
    assert top["prob"].to_list() == [1.0] * 4


def test_hand_computed_columns_temperature_one_target():
    frame = _decisions(TARGET, 1.0)
    assert frame["logging_marginal"].to_list() == pytest.approx(LOGGING_MARGINAL)
    # Request 1 (weights 2, 1, 1): p1(12) = 1/4; p2(10 | 12) = 2/3; marginal of 10 at slot 2:
    # b = 11: 1/4 * 2/3, b = 12: 1/4 * 2/3 -> 1/3. Request 2 (weights 2, 3, 1): p1(21) = 1/2;
    # p2(20 | 21) = 2/3; marginal of 20 at slot 2: b = 21: 1/2 * 2/3, b = 22: 1/6 * 2/5 -> 2/5.
    assert frame["target_prob"].to_list() == pytest.approx([1 / 4, 2 / 3, 1 / 2, 2 / 3])
    assert frame["target_marginal"].to_list() == pytest.approx([1 / 4, 1 / 3, 1 / 2, 2 / 5])
    # The frame feeds the slate estimators as it is.
    est = evaluate(["iips", "rips"], frame, Bootstrap(20))
    iips = ((1 / 4) / P1[12] * 1 + (1 / 3) / LM_10 * 1 + (2 / 5) / LM_20 * 1) / 2
    rips = ((1 / 4) / P1[12] + (1 / 4) / P1[12] * (2 / 3) / P2[10]
            + (1 / 2) / P1[21] * (2 / 3) / P2[20]) / 2
    assert est["iips"][0].value == pytest.approx(iips)
    assert est["rips"][0].value == pytest.approx(rips)


def test_monte_carlo_slots_agree_with_the_exact_ones():
    exact = _decisions(TARGET, 1.0)
    mc = _decisions(TARGET, 1.0, n_samples=4000, seed=3, exact_rows=0)  # slot 2 by Monte Carlo
    assert mc["logging_marginal"][1] != exact["logging_marginal"][1]  # it did sample
    for col in ("logging_marginal", "target_marginal"):
        assert mc[col].to_list() == pytest.approx(exact[col].to_list(), abs=0.02)


# The target with an unlogged post 13 in request 1 (weights 10, 12, 13 -> 2, 1, 1); request 2
# as before. Mass on 13: slot 1: 1/4; slot 2: b = 10: 1/2 * 1/2, b = 12: 1/4 * 1/3 -> 1/3.
RETRIEVED = pl.DataFrame({"request_id": [1, 1, 1, 2, 2, 2], "post_id": [10, 12, 13, 20, 21, 22],
                          "score": [LN2, 0.0, 0.0, LN2, LN3, 0.0]})


def test_support_is_one_over_the_logged_candidates_and_hand_computed_otherwise():
    full = support(slate_marginals(TARGET, 1.0, 2), CANDIDATES)
    assert full == {"support": pytest.approx(1.0), "per_slot": {1: pytest.approx(1.0),
                                                                2: pytest.approx(1.0)},
                    "n_requests": 2}
    assert support_status(full) == "full support"
    part = support(slate_marginals(RETRIEVED, 1.0, 2), CANDIDATES)
    assert part["per_slot"] == {1: pytest.approx((3 / 4 + 1) / 2),
                                2: pytest.approx((2 / 3 + 1) / 2)}
    assert part["support"] == pytest.approx((3 / 4 + 2 / 3 + 1 + 1) / 4)
    assert support_status(part) == "partial support (0.85): biased"
    frame = _decisions(RETRIEVED, 1.0)
    assert frame["unsupported_slot_mass"].to_list() == pytest.approx([1 / 4, 1 / 3, 0, 0])
    assert frame["unsupported_mass"].to_list() == pytest.approx([7 / 24, 7 / 24, 0, 0])
    assert decisions_support(frame)["support"] == pytest.approx(part["support"])
    # Logged [12, 10]: p1(12) = 1/4; p2(10 | 12) = 2/3 (10, 13 left); marginal of 10 at slot 2:
    # b = 12: 1/4 * 2/3, b = 13: 1/4 * 2/3 -> 1/3.
    assert frame["target_prob"].to_list()[:2] == pytest.approx([1 / 4, 2 / 3])
    assert frame["target_marginal"].to_list()[:2] == pytest.approx([1 / 4, 1 / 3])
    diag = evaluate(["iips"], frame, Bootstrap(20))["iips"][0].diagnostics
    assert diag["unsupported_mass"] == pytest.approx(1 - part["support"])


def test_a_logged_post_outside_the_policy_gets_zero():
    # Request 1 over 10, 11, 13 (uniform): the logged 12 is not among them.
    uniform = RETRIEVED.with_columns(post_id=pl.Series([10, 11, 13, 20, 21, 22]),
                                     score=pl.lit(0.0))
    frame = _decisions(uniform, 1.0)
    assert frame["target_marginal"].to_list()[:2] == pytest.approx([0.0, 1 / 3])
    assert frame["target_prob"].to_list()[:2] == [0.0, 0.0]  # slot 2: the prefix is impossible


@pytest.mark.parametrize("policy_scores, message", [
    (TARGET.with_columns(request_id=pl.Series([1, 1, 1, 9, 9, 9])),
     r"policy_scores: column 'request_id': 1 request\(s\) not in the log's impressions "
     r"\(first: \[9\]"),
    (pl.concat([TARGET, TARGET.head(1)]),
     r"policy_scores: columns \['request_id', 'post_id'\]: 2 rows repeat .* "
     r"\(first: \[\(1, 10\)\]"),
    (TARGET.with_columns(score=pl.Series([0.0, float("nan"), 0, 0, 0, 0])),
     r"policy_scores: column 'score': 1 NaN or infinite value\(s\) \(first .*\[\(1, 11\)\]"),
    (TARGET.drop("score"), r"policy_scores: missing column\(s\) \['score'\]"),
    (TARGET.head(4), r"policy_scores: column 'post_id': 1 request\(s\) with fewer than slate_size"),
])
def test_bad_input_names_the_frame_and_the_column(policy_scores, message):
    with pytest.raises(ValueError, match=message):
        _decisions(policy_scores, 1.0)


def test_a_bad_log_is_refused():
    with pytest.raises(ValueError, match=r"impressions: column 'post_id': 1 logged post"):
        slate_decisions(IMPRESSIONS, CANDIDATES.filter(pl.col("post_id") != 10), LOGGING, TARGET,
                        1.0, 2)
    with pytest.raises(ValueError, match=r"impressions: column 'position': 1 request"):
        slate_decisions(IMPRESSIONS.filter(pl.col("post_id") != 20), CANDIDATES, LOGGING, TARGET,
                        1.0, 2)
    with pytest.raises(ValueError, match=r"impressions: missing column\(s\) \['like'\]"):
        slate_decisions(IMPRESSIONS, CANDIDATES, LOGGING, TARGET, 1.0, 2, "like")
    with pytest.raises(ValueError, match=r"candidates: column 'logging_score': 1 NaN"):
        slate_decisions(IMPRESSIONS, CANDIDATES.with_columns(
            logging_score=pl.Series([0.0, float("nan"), 0, 0, 0, 0])), LOGGING, TARGET, 1.0, 2)
    # Integer widths other than Int64 are fine.
    narrow = IMPRESSIONS.with_columns(pl.col("request_id", "post_id").cast(pl.Int32))
    frame = slate_decisions(narrow, CANDIDATES, LOGGING, TARGET.with_columns(
        pl.col("post_id").cast(pl.Int32)), 1.0, 2)
    assert frame["target_prob"].to_list() == pytest.approx([1 / 4, 2 / 3, 1 / 2, 2 / 3])


# --- the small world ---------------------------------------------------------------------------


def _world_frames(world, policy_scores, temperature, epsilon=0.0):
    from recsim.world.world import logging_policy

    cfg = world.config
    return slate_decisions(world.impressions, world.candidates, logging_policy(cfg),
                           policy_scores, temperature, cfg.slate_size, "click", n_samples=64,
                           seed=1, epsilon=epsilon)


def test_iips_of_the_logging_policy_is_its_on_policy_slate_reward(small_world):
    cfg = small_world.config
    scores = small_world.candidates.rename({"logging_score": "score"})
    frame = _world_frames(small_world, scores, cfg.logging_temperature, cfg.logging_epsilon)
    est = evaluate(["iips", "rips"], frame, Bootstrap(200, seed=0))
    on_policy = small_world.impressions.group_by("request_id").agg(
        pl.col("click").cast(pl.Float64).sum())["click"].mean()
    assert np.allclose(frame["target_prob"], frame["propensity"])  # rips weights are all 1
    assert est["rips"][0].value == pytest.approx(on_policy)
    iips = est["iips"][0]
    assert iips.ci_low <= on_policy <= iips.ci_high
    assert abs(iips.value / on_policy - 1) < 0.05
    assert decisions_support(frame)["support"] == pytest.approx(1.0)


def test_iips_of_a_deterministic_top_s_policy_covers_the_truth(small_world):
    cfg = small_world.config
    scores = small_world.candidates.rename({"logging_score": "score"})
    frame = _world_frames(small_world, scores, 0.0)
    iips = evaluate(["iips"], frame, Bootstrap(200, seed=0))["iips"][0]
    requests = small_world.impressions.filter(pl.col("position") == 1).select(
        "request_id", "member_id", "timestamp")
    marginals = slate_marginals(scores, 0.0, cfg.slate_size)
    assert marginals.height == requests.height * cfg.slate_size  # one post per slot
    truth = ab.true_value(small_world.truth, marginals, requests, "click")
    assert iips.ci_low <= truth <= iips.ci_high
    # Full support: per slot, the iips weights average to the target's mass there, 1.
    weight = frame.group_by("position").agg(
        (pl.col("target_marginal") / pl.col("logging_marginal")).mean())
    assert weight["target_marginal"].to_list() == pytest.approx([1.0] * cfg.slate_size, abs=0.1)
    on_policy = small_world.impressions["click"].sum() / requests.height
    assert truth > on_policy  # the top S by logging score beats the exploring logging policy


def test_the_logs_marginals_computed_once_are_those_each_policy_would_draw(small_world):
    """estimate_offline shares the logging marginals between policies: logged_slot_marginals
    gives the very numbers slate_decisions draws itself with the same seed."""
    from recsim.ope.slate_offline import logged_slot_marginals
    from recsim.world.world import logging_policy

    cfg = small_world.config
    requests = small_world.impressions.select("request_id").unique().sort("request_id").head(300)
    scores = (small_world.candidates.join(requests, on="request_id")
              .select("request_id", "post_id", score=pl.col("logging_score") * 0.5))
    own = slate_decisions(small_world.impressions, small_world.candidates, logging_policy(cfg),
                          scores, 0.0, cfg.slate_size, n_samples=16, seed=3)
    shared = logged_slot_marginals(small_world.impressions, small_world.candidates,
                                   logging_policy(cfg), requests, cfg.slate_size, 16, seed=3)
    assert np.array_equal(own["logging_marginal"].to_numpy(), shared.ravel())
    reused = slate_decisions(small_world.impressions, small_world.candidates, logging_policy(cfg),
                             scores, 0.0, cfg.slate_size, n_samples=16, seed=3,
                             logging_marginal=shared)
    assert reused.equals(own)
