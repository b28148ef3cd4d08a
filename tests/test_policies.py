import polars as pl
import pytest

from recsim.ope.policies import check_support, logged_top_slot, top_slot_probabilities, with_target


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


def test_mass_outside_the_candidate_sets_is_refused():
    candidates = pl.DataFrame({"request_id": [1, 1, 2], "post_id": [10, 11, 10]})
    inside = pl.DataFrame({"request_id": [1, 2], "post_id": [11, 10], "prob": [1.0, 1.0]})
    check_support(inside, candidates)
    outside = pl.DataFrame({"request_id": [1, 2, 2], "post_id": [11, 10, 99],
                            "prob": [1.0, 0.75, 0.25]})
    with pytest.raises(ValueError, match=r"outside the log's candidate sets, in 1 request\(s\)"):
        check_support(outside, candidates)
