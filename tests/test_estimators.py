"""Estimators against hand-computed values, their invariants, and their input errors."""

import numpy as np
import polars as pl
import pytest

from recsim.ope import ab
from recsim.ope.bootstrap import cluster_sums, concat_sums, finish, poisson_counts
from recsim.ope.estimators import ESTIMATORS, Bootstrap, check_decisions, estimate


def _decisions(**overrides):
    base = {
        "member_id": [1, 1, 2, 3],
        "propensity": [0.5, 0.25, 0.2, 1.0],
        "target_prob": [1.0, 0.0, 1.0, 0.5],
        "reward": [1.0, 1.0, 0.0, 1.0],
        "reward_hat": [0.5, 0.5, 0.2, 0.8],
        "target_reward_hat": [0.6, 0.4, 0.3, 0.9],
    }
    base.update(overrides)
    return pl.DataFrame(base)


# weights w: 2, 0, 5, 0.5; w * r: 2, 0, 0, 0.5; w * (r - reward_hat): 1, 0, -1, 0.1
HAND = {
    "replay": 1.5 / 2.5,
    "ips": 2.5 / 4,
    "clipped_ips": 2.5 / 4,
    "snips": 2.5 / 7.5,
    "dm": 2.2 / 4,
    "dr": (2.2 + 0.1) / 4,
    "sndr": 2.2 / 4 + 0.1 / 7.5,
}


@pytest.mark.parametrize("name, value", HAND.items())
def test_estimators_match_hand_computed_values(name, value):
    est, reps = estimate(name, _decisions(), Bootstrap(n_boot=50))
    assert est.value == pytest.approx(value)
    assert est.n == 4 and reps.shape == (50,)
    assert est.diagnostics["max_weight"] == 5.0
    assert est.diagnostics["mean_weight"] == pytest.approx(7.5 / 4)
    assert est.diagnostics["effective_sample_size"] == pytest.approx(7.5**2 / (4 + 25 + 0.25))
    assert est.diagnostics["unsupported_mass"] == 0.0


def test_clipping_caps_weights_at_ten():
    frame = _decisions(propensity=[0.05, 0.25, 0.2, 1.0])  # first weight 20
    assert estimate("ips", frame, Bootstrap(10))[0].value == pytest.approx((20 + 0.5) / 4)
    assert estimate("clipped_ips", frame, Bootstrap(10))[0].value == pytest.approx((10 + 0.5) / 4)


def _slates():
    """Two requests of two slots; the evaluation policy's conditionals and marginals."""
    return pl.DataFrame({
        "request_id": [7, 7, 8, 8], "position": [1, 2, 1, 2], "member_id": [1, 1, 2, 2],
        "propensity": [0.5, 0.5, 0.25, 1.0], "target_prob": [1.0, 0.5, 0.5, 1.0],
        "logging_marginal": [0.5, 0.4, 0.25, 0.2], "target_marginal": [1.0, 0.5, 0.5, 0.3],
        "reward": [1.0, 1.0, 0.0, 1.0],
    })


def test_slate_estimators_match_hand_computed_values():
    frame = _slates()
    # iips: request 7: 2*1 + 1.25*1; request 8: 2*0 + 1.5*1  -> (3.25 + 1.5) / 2
    assert estimate("iips", frame, Bootstrap(20))[0].value == pytest.approx(4.75 / 2)
    # rips: prefix weights request 7: 2, 2*1 = 2; request 8: 2, 2*1 = 2 -> (2 + 2 + 0 + 2) / 2
    assert estimate("rips", frame, Bootstrap(20))[0].value == pytest.approx(6 / 2)
    # rows out of order give the same answer (the prefix product follows `position`)
    assert estimate("rips", frame.reverse(), Bootstrap(20))[0].value == pytest.approx(3.0)
    assert estimate("iips", frame, Bootstrap(20))[0].n == 2  # decisions are requests


def test_on_policy_evaluation_is_the_logged_mean():
    frame = _decisions().with_columns(target_prob=pl.col("propensity"))
    assert estimate("ips", frame, Bootstrap(10))[0].value == pytest.approx(0.75)


def test_unsupported_mass_is_reported():
    frame = _decisions().with_columns(unsupported_mass=pl.Series([0.0, 0.0, 0.4, 0.2]))
    est, _ = estimate("ips", frame, Bootstrap(10))
    assert est.diagnostics["unsupported_mass"] == pytest.approx(0.6 / 4)


def test_snips_stays_within_reward_range_and_interval_is_ordered():
    rng = np.random.default_rng(1)
    n = 2000
    frame = pl.DataFrame({
        "member_id": rng.integers(0, 300, n),
        "propensity": rng.uniform(0.01, 1.0, n),
        "target_prob": rng.uniform(0.0, 1.0, n),
        "reward": rng.integers(0, 2, n).astype(float),
    })
    est, reps = estimate("snips", frame, Bootstrap(200))
    assert 0.0 <= reps.min() and reps.max() <= 1.0
    assert est.ci_low <= est.value <= est.ci_high
    assert est.n == n and est.diagnostics["n_members"] == 300


def test_poisson_counts_depend_only_on_seed_member_and_replicate():
    a = poisson_counts(np.array([5, 9, 11]), 400, seed=3)
    b = poisson_counts(np.array([11, 5]), 400, seed=3)
    assert np.array_equal(a[[2, 0]], b)  # a member's counts do not depend on the others
    assert not np.array_equal(a, poisson_counts(np.array([5, 9, 11]), 400, seed=4))
    many = poisson_counts(np.arange(2000), 200, seed=0)
    assert many.mean() == pytest.approx(1.0, abs=0.01) and many.var() == pytest.approx(1.0, abs=0.02)


def test_shards_split_by_member_give_exactly_the_single_process_numbers():
    rng = np.random.default_rng(2)
    n = 5000
    frame = pl.DataFrame({"member_id": rng.integers(0, 400, n),
                          "num": rng.random(n), "den": rng.random(n) + 0.5})
    whole = cluster_sums(frame.select("num", "den"), frame["member_id"])
    shards = [frame.filter(pl.col("member_id") % 3 == k) for k in range(3)]
    joined = concat_sums([cluster_sums(s.select("num", "den"), s["member_id"]) for s in shards])
    a, reps_a = finish("x", whole, lambda t: t["num"] / t["den"], 100, 0)
    b, reps_b = finish("x", joined, lambda t: t["num"] / t["den"], 100, 0)
    assert a.value == b.value and np.array_equal(reps_a, reps_b)
    with pytest.raises(ValueError, match="more than one shard"):
        concat_sums([whole, whole])


def test_paired_lift_of_a_policy_against_itself_is_zero():
    frame, _ = _bandit(n=2000)
    lift = ab.offline_lift("snips", frame, frame, Bootstrap(100))
    assert lift.lift == 0.0 and lift.ci_low == 0.0 and lift.ci_high == 0.0
    assert lift.p_value == 1.0 and lift.std_error == 0.0 and lift.n_nonfinite == 0


def test_a_three_member_log_has_resamples_without_data_and_says_so():
    """_decisions' snips: a replicate that leaves out all three members is 0 / 0; the lift's
    control is 0 also when members 1 and 3 (the only rewards under weight) are left out."""
    lift = ab.offline_lift("snips", _decisions(), _decisions(), Bootstrap(100))
    counts = poisson_counts(np.array([1, 2, 3]), 100, seed=0)
    assert lift.control.n_nonfinite == int((counts.sum(axis=0) == 0).sum()) > 0
    assert lift.n_nonfinite == int(((counts[0] == 0) & (counts[2] == 0)).sum())
    assert lift.lift == 0.0 and np.isnan(lift.ci_low) and np.isnan(lift.control.ci_high)


@pytest.mark.parametrize(
    "frame, message",
    [
        (_decisions(propensity=[0.5, 0.0, 0.2, 1.0]), "propensity must be in (0, 1]"),
        (_decisions(propensity=[0.5, 1.2, 0.2, 1.0]), "propensity must be in (0, 1]"),
        (_decisions(propensity=[0.5, float("nan"), 0.2, 1.0]),
         "column 'propensity': 1 non-finite value(s) (NaN or inf) at row(s) [1]"),
        (_decisions(reward=[1.0, 0.0, float("nan"), float("nan")]),
         "column 'reward': 2 non-finite value(s) (NaN or inf) at row(s) [2, 3]"),
        (_decisions(reward=[float("inf"), 0.0, 1.0, 1.0]), "column 'reward': 1 non-finite"),
        (_decisions(target_prob=[1.0, float("nan"), 1.0, 0.5]),
         "column 'target_prob': 1 non-finite value(s) (NaN or inf) at row(s) [1]"),
        (_decisions(propensity=[0.5, None, 0.2, 1.0]), "null values in column(s) ['propensity']"),
        (_decisions().drop("propensity"), "missing column(s) ['propensity']"),
        (_decisions(target_prob=[1.5, 0.0, 1.0, 0.5]), "column 'target_prob'"),
        (_decisions(target_prob=[-0.1, 0.0, 1.0, 0.5]), "column 'target_prob'"),
        (_decisions().head(0), "empty log"),
    ],
)
def test_bad_decisions_get_clear_errors(frame, message):
    with pytest.raises(ValueError) as err:
        check_decisions(frame, "day1 log")
    assert "day1 log" in str(err.value) and message in str(err.value)


@pytest.mark.parametrize(
    "name, frame, message",
    [
        ("dr", _decisions().drop("reward_hat"), "missing column(s) ['reward_hat']"),
        ("dm", _decisions(target_reward_hat=[0.1, None, 0.2, 0.3]), "null values"),
        ("iips", _decisions(), "missing column(s) ['request_id', 'position'"),
        ("iips", _slates().with_columns(logging_marginal=pl.lit(0.0)),
         "logging_marginal must be in (0, 1]"),
        ("magic", _decisions(), "unknown estimator(s) ['magic']"),
        ("dr", _decisions(reward_hat=[0.5, float("nan"), 0.2, 0.8]),
         "column 'reward_hat': 1 non-finite value(s) (NaN or inf) at row(s) [1]"),
        ("sndr", _decisions(target_reward_hat=[0.6, 0.4, float("-inf"), 0.9]),
         "column 'target_reward_hat': 1 non-finite value(s) (NaN or inf) at row(s) [2]"),
        ("dm", _decisions(reward=[1.0, float("nan"), 0.0, 1.0]), "column 'reward': 1 non-finite"),
        ("iips", _slates().with_columns(target_marginal=pl.Series([1.0, float("nan"), 0.5, 0.3])),
         "column 'target_marginal': 1 non-finite value(s) (NaN or inf) at row(s) [1]"),
        ("rips", _slates().with_columns(reward=pl.Series([1.0, 1.0, 0.0, float("nan")])),
         "column 'reward': 1 non-finite value(s) (NaN or inf) at row(s) [3]"),
    ],
)
def test_each_estimator_checks_the_columns_it_reads(name, frame, message):
    with pytest.raises(ValueError) as err:
        estimate(name, frame, Bootstrap(10))
    assert message in str(err.value)


def test_different_request_sets_are_refused():
    frame = _slates()
    other = frame.with_columns(request_id=pl.col("request_id") + 100)
    with pytest.raises(ValueError, match="2 request"):
        ab.offline_lift("ips", frame, other, Bootstrap(10))
    with pytest.raises(ValueError, match="same logged decisions"):
        ab.offline_lift("ips", frame, frame.head(3), Bootstrap(10))


def _bandit(n=200_000, seed=0):
    """Known answer: four actions logged uniformly; target puts 1/2 on the two best (value 0.35)."""
    rng = np.random.default_rng(seed)
    true_ctr = np.array([0.1, 0.2, 0.3, 0.4])
    action = rng.integers(0, 4, n)
    reward = (rng.random(n) < true_ctr[action]).astype(float)
    target = np.array([0.0, 0.0, 0.5, 0.5])
    noisy_model = true_ctr + np.array([0.05, -0.05, 0.05, -0.05])  # a biased reward model
    return pl.DataFrame({"member_id": np.arange(n), "propensity": np.full(n, 0.25),
                         "target_prob": target[action], "reward": reward,
                         "reward_hat": noisy_model[action],
                         "target_reward_hat": np.full(n, target @ noisy_model)}), 0.35


@pytest.mark.parametrize("name", ["replay", "ips", "clipped_ips", "snips", "dr", "sndr"])
def test_unbiased_estimators_find_the_known_value(name):
    frame, truth = _bandit()
    est, _ = estimate(name, frame, Bootstrap(100))
    assert est.ci_low <= truth <= est.ci_high
    assert est.value == pytest.approx(truth, abs=0.01)


def test_dm_inherits_its_models_bias_and_dr_removes_it():
    frame, truth = _bandit()
    dm, _ = estimate("dm", frame, Bootstrap(100))
    assert dm.value == pytest.approx(truth)  # this model's errors cancel under the target
    biased = frame.with_columns(pl.col("reward_hat", "target_reward_hat") + 0.1)
    assert estimate("dm", biased, Bootstrap(100))[0].value == pytest.approx(truth + 0.1)
    assert estimate("dr", biased, Bootstrap(100))[0].value == pytest.approx(truth, abs=0.01)


def test_every_estimator_is_registered_with_its_columns():
    assert set(ESTIMATORS) == {"replay", "ips", "clipped_ips", "snips", "dm", "dr", "sndr",
                               "iips", "rips", "pbm"}
