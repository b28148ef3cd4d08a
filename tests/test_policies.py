import polars as pl
import pytest

from recsim.ope.policies import logged_top_slot, top_slot_probabilities, with_target


def _scored():
    return pl.DataFrame({"request_id": [1, 1, 1, 2, 2], "post_id": [10, 11, 12, 10, 13],
                         "score": [0.1, 2.0, 2.0, -1.0, 0.0]})


def test_deterministic_policy_picks_best_with_stable_ties():
    probs = top_slot_probabilities(_scored(), 0.0).sort("request_id")
    assert probs.rows() == [(1, 11, 1.0), (2, 13, 1.0)]


def test_softmax_policy_sums_to_one_and_orders_by_score():
    probs = top_slot_probabilities(_scored(), 0.5)
    sums = probs.group_by("request_id").agg(pl.col("prob").sum())
    assert sums["prob"].to_list() == pytest.approx([1.0, 1.0])
    r1 = dict(probs.filter(pl.col("request_id") == 1).select("post_id", "prob").rows())
    assert r1[11] == pytest.approx(r1[12]) and r1[11] > r1[10]


def test_target_probability_is_zero_for_actions_never_chosen(small_world):
    decisions = logged_top_slot(small_world.impressions)
    assert decisions.height == small_world.impressions["request_id"].n_unique()
    chosen = decisions.head(3).select("request_id", "post_id", prob=pl.lit(1.0))
    framed = with_target(decisions, chosen)
    assert framed["request_id"].to_list() == decisions["request_id"].to_list()  # order kept
    assert framed["target_prob"].sum() == 3.0


# --- slates ---------------------------------------------------------------------------------

import numpy as np  # noqa: E402

from recsim.ope.policies import (check_support, logged_conditionals, logged_marginals,  # noqa: E402
                             plackett_luce, slot_marginals)
from recsim.world.world import slot_probabilities  # noqa: E402


def test_plackett_luce_is_the_worlds_logging_policy():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(6, 8))
    available = rng.random((6, 8)) < 0.7
    available[:, 0] = True
    ours = plackett_luce(0.7, 0.2)(scores)(available)
    assert np.allclose(ours, slot_probabilities(scores, available, 0.7, 0.2))
    sorted_policy = plackett_luce(0.0)(scores)(np.ones((6, 8), bool))
    assert (sorted_policy.argmax(axis=1) == scores.argmax(axis=1)).all()


def test_logged_conditionals_reproduce_the_worlds_propensities(small_world):
    cfg = small_world.config
    cands = small_world.candidates.sort("request_id", maintain_order=True)
    imps = small_world.impressions.sort("request_id", "position")
    n = imps["request_id"].n_unique()
    cand = cands["post_id"].to_numpy().reshape(n, -1)
    shown_post = imps["post_id"].to_numpy().reshape(n, -1)
    shown = np.argmax(shown_post[:, :, None] == cand[:, None, :], axis=2)
    scores = cands["logging_score"].to_numpy().reshape(n, -1)
    policy = plackett_luce(cfg.logging_temperature, cfg.logging_epsilon)
    assert np.allclose(logged_conditionals(policy, scores, shown).ravel(), imps["propensity"])


def test_marginals_are_distributions_and_agree_with_each_other():
    rng = np.random.default_rng(1)
    scores = rng.normal(scale=2.0, size=(40, 12))
    policy = plackett_luce(1.0, 0.1)
    marg = slot_marginals(policy, scores, 4, 4000, rng)
    assert np.allclose(marg.sum(axis=2), 1.0)  # each slot holds one post
    assert (marg.sum(axis=1) <= 1.02).all()  # a post holds at most one slot (up to MC noise)
    shown = np.argsort(-scores, axis=1)[:, [3, 0, 7, 1]]  # some logged slates
    picked = np.take_along_axis(marg, shown[:, :, None], axis=2)[:, :, 0]
    ours = logged_marginals(policy, scores, shown, 400, rng)
    assert np.allclose(ours[:, 0], picked[:, 0])  # slot 1 is exact in both
    assert (ours > 0).all()
    assert np.allclose(ours, picked, rtol=0.1, atol=1e-3)


def test_mass_outside_the_candidate_sets_is_refused():
    candidates = pl.DataFrame({"request_id": [1, 1, 2], "post_id": [10, 11, 10]})
    inside = pl.DataFrame({"request_id": [1, 2], "post_id": [11, 10], "prob": [1.0, 1.0]})
    check_support(inside, candidates)
    outside = pl.DataFrame({"request_id": [1, 2, 2], "post_id": [11, 10, 99],
                            "prob": [1.0, 0.75, 0.25]})
    with pytest.raises(ValueError, match=r"outside the log's candidate sets, in 1 request\(s\)"):
        check_support(outside, candidates)
