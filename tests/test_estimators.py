"""Estimators against hand-computed values, their invariants, and their input errors."""

import numpy as np
import polars as pl
import pytest

from recsim import ab
from recsim.estimators import Bootstrap, check_decisions, estimate, ips, snips


def _decisions(**overrides):
    base = {
        "member_id": [1, 1, 2, 3],
        "propensity": [0.5, 0.25, 0.2, 1.0],
        "target_prob": [1.0, 0.0, 1.0, 0.5],
        "reward": [1.0, 1.0, 0.0, 1.0],
    }
    base.update(overrides)
    return pl.DataFrame(base)


def test_ips_and_snips_match_hand_computed_values():
    frame = _decisions()
    # weights: 2, 0, 5, 0.5 ; w * r: 2, 0, 0, 0.5
    boot = Bootstrap.over_members(frame["member_id"], n_boot=50, seed=0)
    assert estimate("ips", frame, boot)[0].value == pytest.approx(2.5 / 4)
    assert estimate("snips", frame, boot)[0].value == pytest.approx(2.5 / 7.5)
    diag = estimate("ips", frame, boot)[0].diagnostics
    assert diag["max_weight"] == 5.0
    assert diag["effective_sample_size"] == pytest.approx(7.5**2 / (4 + 25 + 0.25))


def test_on_policy_evaluation_is_the_logged_mean():
    frame = _decisions().with_columns(target_prob=pl.col("propensity"))
    boot = Bootstrap.over_members(frame["member_id"], n_boot=10, seed=0)
    assert estimate("ips", frame, boot)[0].value == pytest.approx(0.75)


def test_snips_stays_within_reward_range_and_interval_is_ordered():
    rng = np.random.default_rng(1)
    n = 2000
    frame = pl.DataFrame({
        "member_id": rng.integers(0, 300, n),
        "propensity": rng.uniform(0.01, 1.0, n),
        "target_prob": rng.uniform(0.0, 1.0, n),
        "reward": rng.integers(0, 2, n).astype(float),
    })
    boot = Bootstrap.over_members(frame["member_id"], n_boot=200, seed=0)
    est, reps = estimate("snips", frame, boot)
    assert 0.0 <= reps.min() and reps.max() <= 1.0
    assert est.ci_low <= est.value <= est.ci_high
    assert est.n == n


def test_bootstrap_resamples_members_not_rows():
    frame = _decisions()
    boot = Bootstrap.over_members(frame["member_id"], n_boot=5, seed=0)
    assert boot.weights.shape == (3, 5)  # three members
    assert boot.cluster_of_row.tolist() == [0, 0, 1, 2]


def test_paired_lift_of_a_policy_against_itself_is_zero():
    frame = _decisions()
    boot = Bootstrap.over_members(frame["member_id"], n_boot=100, seed=0)
    lift = ab.offline_lift("snips", frame, frame, boot)
    assert lift.lift == 0.0 and lift.ci_low == 0.0 and lift.ci_high == 0.0


@pytest.mark.parametrize(
    "frame, message",
    [
        (_decisions(propensity=[0.5, 0.0, 0.2, 1.0]), "propensity must be in (0, 1]"),
        (_decisions(propensity=[0.5, 1.2, 0.2, 1.0]), "propensity must be in (0, 1]"),
        (_decisions(propensity=[0.5, None, 0.2, 1.0]), "null values in column(s) ['propensity']"),
        (_decisions().drop("propensity"), "missing column(s) ['propensity']"),
        (_decisions(target_prob=[1.5, 0.0, 1.0, 0.5]), "column 'target_prob'"),
        (_decisions().head(0), "empty log"),
    ],
)
def test_bad_decisions_get_clear_errors(frame, message):
    with pytest.raises(ValueError) as err:
        check_decisions(frame, "day1 log")
    assert "day1 log" in str(err.value) and message in str(err.value)


def test_ips_is_unbiased_on_a_simulated_bandit():
    """IPS of a target policy on uniformly logged data ≈ its true value (known answer)."""
    rng = np.random.default_rng(0)
    n, k = 200_000, 4
    true_ctr = np.array([0.1, 0.2, 0.3, 0.4])
    action = rng.integers(0, k, n)
    reward = (rng.random(n) < true_ctr[action]).astype(float)
    target = np.array([0.0, 0.0, 0.5, 0.5])  # true value 0.35
    frame = pl.DataFrame({"member_id": np.arange(n), "propensity": np.full(n, 1 / k),
                          "target_prob": target[action], "reward": reward})
    boot = Bootstrap.over_members(frame["member_id"], n_boot=100, seed=0)
    for name in ("ips", "snips"):
        est, _ = estimate(name, frame, boot)
        assert est.ci_low <= 0.35 <= est.ci_high
        assert est.value == pytest.approx(0.35, abs=0.01)
