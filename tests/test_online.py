"""The simulated online A/B (recsim/ope/online.py) and the member's response (sample_outcomes)."""

from __future__ import annotations

import copy
import json
from dataclasses import asdict

import numpy as np
import polars as pl
import pytest

from recsim.ope import ab, online
from recsim.world import world as world_module
from recsim.world.rewards import DEFAULT_WEIGHTS
from recsim.world.timeline import WORLD_START
from recsim.world.user_model import UserModel, sample_outcomes


@pytest.fixture(scope="module")
def requests(small_world):
    return (small_world.impressions.select("request_id", "member_id", "timestamp")
            .unique("request_id").sort("request_id"))


@pytest.fixture(scope="module")
def logged(small_world):
    """The logged slates as a deterministic policy's slates: [R * S rows], prob 1."""
    return small_world.impressions.select(
        "request_id", "post_id", "position", prob=pl.lit(1.0))


@pytest.fixture(scope="module")
def best_first(small_world, logged, requests):
    """The logged slates re-ordered by the true click probability at the top slot."""
    truth = small_world.truth
    top = truth.expected_outcomes(logged.join(requests, on="request_id")
                                  .with_columns(position=pl.lit(1, dtype=pl.Int32)))
    return top.with_columns(
        position=pl.col("p_click").rank("ordinal", descending=True).over("request_id")
        .cast(pl.Int32)
    ).select("request_id", "post_id", "position", "prob").sort("request_id", "position")


# --- expected engagement --------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["click", "weighted", "dwell"])
def test_expected_engagement_is_true_value_at_the_top_slot(small_world, requests, metric):
    imp = small_world.impressions
    # A stochastic top slot: the logged slot-1 post with 0.6, the slot-2 post with 0.4.
    action_probs = imp.filter(pl.col("position") <= 2).select(
        "request_id", "post_id", prob=pl.when(pl.col("position") == 1).then(0.6).otherwise(0.4))
    slates = action_probs.with_columns(position=pl.lit(1, dtype=pl.Int32))
    got = online.expected_engagement(small_world.truth, slates, requests, metric)
    assert got["metric"] == ab.true_value(small_world.truth, action_probs, requests, metric)
    assert got["metric"] > 0


def _by_hand(truth: UserModel, member_id, post_id, position, hours) -> dict[str, float]:
    """Expected outcomes of one shown post, from the user model's formulas written out."""
    c = truth.config
    m = int(np.searchsorted(truth.member_ids, member_id))
    p = int(np.searchsorted(truth.post_ids, post_id))
    affinity = truth.interests[m, truth.post_topic[p]]
    author = (truth.member_latent[m] @ truth.author_latent[truth.post_author[p]]
              / np.sqrt(c.latent_dim))
    fresh = 0.5 ** (max(hours - truth.post_created[p], 0.0) / c.freshness_halflife_hours)
    q = truth.post_quality[p]
    logit = (c.base_logit + c.topic_weight * affinity + c.author_weight * author
             + c.freshness_weight * fresh + q)
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    examine = position ** -c.position_decay
    click = examine * sig(logit)
    return {"click": click, "like": click * sig(-1 + 2 * affinity + q),
            "comment": click * sig(-3 + 2 * affinity + q),
            "share": click * sig(-3.5 + 2 * affinity + q),
            "dwell": click * 15 * np.exp(affinity + 0.125) + (1 - click) * 2 * examine}


def test_expected_engagement_by_hand_on_two_slots(small_world, requests):
    truth = small_world.truth
    reqs = requests.head(3)  # the third request gets no rows: it still counts in the divisor
    (ra, ma, ta), (rb, mb, tb) = reqs.head(2).rows()
    x, y, z, w = small_world.posts["post_id"].head(4).to_list()
    slates = pl.DataFrame({
        "request_id": [ra, ra, ra, ra, rb, rb],
        "post_id": [x, y, y, x, z, w],
        "position": pl.Series([1, 1, 2, 2, 1, 2], dtype=pl.Int32),
        "prob": [0.7, 0.3, 0.7, 0.3, 1.0, 1.0],
    })
    hours = {r: (t - WORLD_START).total_seconds() / 3600 for r, t in ((ra, ta), (rb, tb))}
    member = {ra: ma, rb: mb}
    want = dict.fromkeys(online.ACTIONS, 0.0)
    for r, post, pos, prob in slates.rows():
        for action, value in _by_hand(truth, member[r], post, pos, hours[r]).items():
            want[action] += prob * value / 3
    got = online.expected_engagement(truth, slates, reqs, "weighted", DEFAULT_WEIGHTS)
    for action in online.ACTIONS:
        assert got[action] == pytest.approx(want[action], rel=1e-9), action
    weighted = sum(DEFAULT_WEIGHTS[a] * want[a] for a in ("click", "like", "comment", "share"))
    assert got["metric"] == pytest.approx(weighted, rel=1e-9)


def test_true_lift(small_world, logged, best_first, requests):
    truth = small_world.truth
    same = online.true_lift(truth, logged, logged, requests, "dwell")
    assert all(v == 0.0 for v in same.lift.values())
    tl = online.true_lift(truth, logged, best_first, requests, "click")
    assert tl.lift["metric"] == pytest.approx(tl.treatment["metric"] / tl.control["metric"] - 1)
    assert tl.lift["click"] == tl.lift["metric"]
    assert tl.lift["click"] > 0.02  # the best post first: more clicks at the examined top slot
    assert tl.control["metric"] == online.expected_engagement(truth, logged, requests)["metric"]


# --- the arm split --------------------------------------------------------------------------


@pytest.mark.parametrize("share", [0.5, 0.2])
def test_assign_arms_is_a_seeded_member_hash(share):
    ids = np.concatenate([np.arange(1, 50_001),
                          np.random.default_rng(0).integers(-2**62, 2**62, 50_000)])
    arms = online.assign_arms(ids, seed=3, treatment_share=share)
    assert np.array_equal(arms, online.assign_arms(ids, seed=3, treatment_share=share))
    n = len(ids)
    assert abs(arms.sum() - share * n) < 4 * np.sqrt(n * share * (1 - share))
    other = online.assign_arms(ids, seed=4, treatment_share=share)
    assert 0.1 * n < (arms != other).sum()  # another seed, another split
    # the split of a member does not depend on who else is in the experiment
    assert np.array_equal(online.assign_arms(ids[::7], 3, share), arms[::7])


def test_a_members_requests_share_one_arm(small_world, logged, requests):
    arms = online.assign_arms(requests["member_id"].to_numpy(), seed=5)
    per_member = requests.with_columns(arm=arms).group_by("member_id").agg(pl.col("arm").n_unique())
    assert per_member["arm"].max() == 1
    res = online.simulate_online_ab(small_world.truth, logged, logged, requests, seed=5, n_boot=50)
    assert res.n_requests_treatment == int(arms.sum())
    assert res.n_requests_control == requests.height - int(arms.sum())
    treated_members = requests.filter(pl.Series(arms))["member_id"].n_unique()
    assert res.n_members_treatment == treated_members
    assert res.n_members_control + treated_members == requests["member_id"].n_unique()
    json.dumps(asdict(res))  # serialisable as it is
    again = online.simulate_online_ab(small_world.truth, logged, logged, requests, seed=5,
                                      n_boot=50)
    assert again == res


# --- the online experiment ------------------------------------------------------------------


@pytest.mark.slow
def test_identical_policies_give_an_interval_covering_zero(small_world, logged, requests):
    results = [online.simulate_online_ab(small_world.truth, logged, logged, requests, "click",
                                         seed=seed, n_boot=300) for seed in range(20)]
    covered = sum(r.ci_low <= 0 <= r.ci_high for r in results)
    assert covered >= 15, [(r.ci_low, r.ci_high) for r in results]
    assert sum(r.p_value > 0.05 for r in results) >= 15
    assert all(r.mde > 0 and r.std_error > 0 for r in results)


@pytest.mark.slow
def test_online_lift_converges_to_the_true_lift(small_world, logged, best_first, requests):
    truth = small_world.truth
    tl = online.true_lift(truth, logged, best_first, requests, "weighted")
    runs = [online.simulate_online_ab(truth, logged, best_first, requests, "weighted", seed=seed,
                                      n_boot=20) for seed in range(200)]
    lifts = np.array([r.lift for r in runs])
    tol = 4 * lifts.std(ddof=1) / np.sqrt(len(lifts))
    assert abs(lifts.mean() - tl.lift["metric"]) < tol, (lifts.mean(), tl.lift["metric"], tol)
    assert tl.lift["metric"] > 2 * tol  # a sign error or swapped arms would fail the line above
    for arm, truth_values in (("control", tl.control), ("treatment", tl.treatment)):
        means = np.array([getattr(r, f"{arm}_mean") for r in runs])
        se = means.std(ddof=1) / np.sqrt(len(means))
        assert abs(means.mean() - truth_values["metric"]) < 4 * se, arm
        for action in online.ACTIONS:  # every action, dwell included, sampled at its expectation
            got = np.array([getattr(r, f"{arm}_actions")[action] for r in runs])
            se = got.std(ddof=1) / np.sqrt(len(got))
            assert abs(got.mean() - truth_values[action]) < 4 * se, (arm, action)


# --- the member's response ------------------------------------------------------------------


def test_sample_outcomes_replays_build_worlds_step_4(small_corpus, monkeypatch):
    """Build a world, catch the rng state after the slates are sampled (step 3) and the outcome
    probabilities of step 4; sample_outcomes from that state must give the logged outcomes."""
    caught = {}
    sample_slates = world_module.sample_slates
    outcome_probabilities = UserModel.outcome_probabilities

    def catch_state(*args, **kwargs):
        out = sample_slates(*args, **kwargs)
        rng = args[3] if len(args) > 3 else kwargs["rng"]
        caught["state"] = copy.deepcopy(rng.bit_generator.state)
        return out

    def catch_probs(self, *args, **kwargs):
        caught["probs"] = outcome_probabilities(self, *args, **kwargs)
        return caught["probs"]

    monkeypatch.setattr(world_module, "sample_slates", catch_state)
    monkeypatch.setattr(UserModel, "outcome_probabilities", catch_probs)
    cfg = world_module.WorldConfig(seed=11, n_members=150, n_authors=40, n_impressions=3000,
                                   slate_size=5, n_candidates=15)
    imp = world_module.build_world(cfg, corpus=small_corpus).impressions
    rng = np.random.default_rng()
    rng.bit_generator.state = caught["state"]
    got = sample_outcomes(caught["probs"], rng)
    for col in ("click", "like", "comment", "share", "dwell_seconds"):
        assert got[col].shape == (600, 5)
        assert np.array_equal(got[col].ravel(), imp[col].to_numpy()), col
    assert 0 < imp["like"].sum() < imp["click"].sum()


def test_sample_outcomes_respects_the_probabilities():
    n = 200_000
    probs = {"click": np.full(n, 0.3), "like": np.full(n, 0.15), "comment": np.full(n, 0.03),
             "share": np.zeros(n), "_mu": np.full(n, np.log(15.0)), "_sigma": np.full(n, 0.5),
             "_examine": np.full(n, 0.5)}
    out = sample_outcomes(probs, np.random.default_rng(0))
    assert abs(out["click"].mean() - 0.3) < 0.005
    assert abs(out["like"].mean() - 0.15) < 0.005 and not (out["like"] & ~out["click"]).any()
    assert abs(out["comment"].mean() - 0.03) < 0.002 and not out["share"].any()
    want_dwell = 0.3 * 15 * np.exp(0.125) + 0.7 * 2.0 * 0.5
    assert out["dwell_seconds"].mean() == pytest.approx(want_dwell, rel=0.02)


# --- bad input ------------------------------------------------------------------------------


def test_served_with_two_posts_at_one_position_is_refused(small_world, logged, requests):
    bad = logged.with_columns(position=pl.when(pl.col("position") == 2).then(1)
                              .otherwise(pl.col("position")).cast(pl.Int32))
    with pytest.raises(ValueError, match=r"served_control: column 'position'.*more than one post"):
        online.simulate_online_ab(small_world.truth, bad, logged, requests)
    with pytest.raises(ValueError, match=r"served_treatment: column 'prob'"):
        online.simulate_online_ab(small_world.truth, logged, logged.with_columns(prob=pl.lit(0.5)),
                                  requests)


def test_a_request_missing_from_requests_is_refused(small_world, logged, requests):
    fewer = requests.filter(pl.col("request_id") != requests["request_id"][3])
    with pytest.raises(ValueError, match=r"served_treatment: column 'request_id'.*missing from the "
                                         r"requests frame's 'request_id'"):
        online.simulate_online_ab(small_world.truth, logged.filter(pl.col("request_id").is_in(
            fewer["request_id"].implode())), logged, fewer)
    with pytest.raises(ValueError, match=r"treatment_slates: column 'request_id'.*missing"):
        online.true_lift(small_world.truth, logged.head(0), logged, fewer)
    with pytest.raises(ValueError, match=r"requests: column 'request_id' is not unique"):
        online.expected_engagement(small_world.truth, logged,
                                   pl.concat([requests, requests.head(2)]))
    with pytest.raises(ValueError, match=r"slates: missing column\(s\) \['prob'\]"):
        online.expected_engagement(small_world.truth, logged.drop("prob"), requests)
