"""The synthetic world: determinism, exact logging propensities, and a sane user model."""

import dataclasses

import numpy as np
import polars as pl
import pytest

from recsim.world.timeline import hours_since_start
from recsim.world.world import build_world


def test_same_seed_gives_identical_frames(small_corpus, small_world_config, small_world):
    again = build_world(small_world_config, corpus=small_corpus)
    for name in ("posts", "members", "authors", "candidates", "impressions"):
        assert getattr(again, name).equals(getattr(small_world, name)), name
    other = build_world(dataclasses.replace(small_world_config, seed=8), corpus=small_corpus)
    assert not other.impressions.equals(small_world.impressions)


def test_logged_propensities_are_exact_and_sum_to_one(small_world):
    """Recompute the logging policy per request, slot by slot, from the candidates table."""
    cfg = small_world.config
    rng = np.random.default_rng(0)
    requests = rng.choice(small_world.impressions["request_id"].max() + 1, size=40, replace=False)
    for request_id in requests:
        cands = small_world.candidates.filter(pl.col("request_id") == request_id)
        shown = small_world.impressions.filter(pl.col("request_id") == request_id).sort("position")
        post_ids = cands["post_id"].to_list()
        scores = dict(zip(post_ids, cands["logging_score"].to_list()))
        remaining = list(post_ids)
        for post_id, logged in zip(shown["post_id"].to_list(), shown["propensity"].to_list()):
            weights = np.exp(np.array([scores[p] for p in remaining]) / cfg.logging_temperature)
            probs = (1 - cfg.logging_epsilon) * weights / weights.sum() + cfg.logging_epsilon / len(remaining)
            assert probs.sum() == pytest.approx(1.0, abs=1e-12)
            assert logged == pytest.approx(probs[remaining.index(post_id)], rel=1e-9)
            remaining.remove(post_id)


def test_engagement_rises_with_topic_affinity(small_world):
    truth, imp = small_world.truth, small_world.impressions
    m = truth.member_index(imp["member_id"].to_numpy())
    p = truth.post_index(imp["post_id"].to_numpy())
    frame = imp.with_columns(affinity=truth.topic_affinity(m, p)).with_columns(
        bucket=pl.col("affinity").qcut(4, labels=["q1", "q2", "q3", "q4"])
    )
    rates = frame.group_by("bucket").agg(pl.col("click").mean(), pl.col("like").mean()).sort("bucket")
    assert rates["click"].is_sorted() and rates["click"][-1] > 2 * rates["click"][0]
    assert rates["like"].is_sorted()


def test_position_bias_lowers_clicks(small_world):
    by_pos = small_world.impressions.group_by("position").agg(pl.col("click").mean()).sort("position")
    assert by_pos["click"][0] > by_pos["click"][-1]


def test_expected_outcomes_match_sampled_outcomes(small_world):
    """The truth's expected engagement agrees with what the simulation sampled (4 std errors)."""
    expected = small_world.truth.expected_outcomes(small_world.impressions)
    n = expected.height
    for outcome, prob in (("click", "p_click"), ("like", "p_like"), ("share", "p_share")):
        observed = expected[outcome].mean()
        predicted = expected[prob].mean()
        se = np.sqrt(predicted * (1 - predicted) / n)
        assert abs(observed - predicted) < 4 * se, outcome
    dwell = expected["dwell_seconds"].mean()
    assert dwell == pytest.approx(expected["e_dwell_seconds"].mean(), rel=0.05)


def test_expected_outcomes_for_a_new_slate_and_unknown_ids(small_world):
    imp = small_world.impressions
    slate = imp.filter(pl.col("request_id") == 0).select("member_id", "post_id", "timestamp")
    first = slate.with_columns(position=pl.int_range(1, pl.len() + 1))
    reversed_ = slate.reverse().with_columns(position=pl.int_range(1, pl.len() + 1))
    a = small_world.truth.expected_outcomes(first)
    b = small_world.truth.expected_outcomes(reversed_)
    # The same posts in another order: each post's probability changes only by its position.
    joined = a.join(b, on="post_id", suffix="_b")
    exam = lambda pos: pos.cast(pl.Float64) ** -small_world.config.position_decay
    ratio = (joined["p_click"] / exam(joined["position"])) / (joined["p_click_b"] / exam(joined["position_b"]))
    assert np.allclose(ratio.to_numpy(), 1.0)
    with pytest.raises(KeyError, match="unknown member_id"):
        small_world.truth.expected_outcomes(first.with_columns(member_id=pl.lit(10**9)))


def test_requests_only_show_live_posts(small_world):
    cfg = small_world.config
    joined = small_world.impressions.join(small_world.posts, on="post_id").with_columns(
        age_h=hours_since_start(pl.col("timestamp")) - hours_since_start(pl.col("created_at"))
    )
    assert joined["age_h"].min() >= -1e-6
    assert joined["age_h"].max() <= cfg.post_window_days * 24 + 1e-6
