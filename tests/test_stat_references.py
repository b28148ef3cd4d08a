"""The report's statistics against closed forms and hand-computed cases.

Each test builds its inputs by hand and writes the expected answer with its own formula (numpy,
scipy's normal quantiles, arithmetic in the comments), not with the helper the code uses:
the paired lift's p-value, standard error and MDE (ab.lift_from_replicates), Holm's adjusted
p-values (ab.holm), per-segment lifts and their Bonferroni intervals (ab.segment_lifts), the
true value of a slate under a two-post user model (ab.true_value), and the rule for bootstrap
replicates that are NaN or inf (bootstrap.percentile_interval, finish, ab.lift_from_replicates).
"""

import datetime as dt
import logging
import math

import numpy as np
import polars as pl
import pytest
from scipy.stats import norm

from recsim.ope import ab
from recsim.ope.bootstrap import (
    ClusterSums,
    Estimate,
    finish,
    percentile_interval,
    poisson_counts,
)
from recsim.ope.estimators import Bootstrap
from recsim.world.timeline import WORLD_START
from recsim.world.user_model import UserModel
from recsim.world.world import WorldConfig


def _estimate(value: float) -> Estimate:
    return Estimate("x", value, value, value, 10)


# --- 1. the paired lift: p-value, standard error, MDE ---------------------------------------

# Ten replicate lifts, equally spaced by h = 0.1 from -0.2 to 0.7 (control 1 in every replicate).
LIFTS = np.round(np.arange(-0.2, 0.75, 0.1), 10)


def test_paired_lift_matches_its_closed_forms():
    """p = 2 min(#{L <= 0}, #{L >= 0}) / B; SE = sd(L) (ddof 1); MDE = (z_{1-a/2} + z_0.8) SE.

    The code's MDE is in relative-lift units: its SE is already the SD of t / c - 1, so the
    closed form (z_{1-a/2} + z_{0.8}) * se_abs / |control| of an absolute SE is this with
    se_abs / |control| = SE."""
    c_reps, t_reps = np.ones(10), 1 + LIFTS
    lift = ab.lift_from_replicates("ips", _estimate(0.2), _estimate(0.25), c_reps, t_reps, 0.2)
    assert lift.lift == pytest.approx(0.25)  # point: 0.25 / 0.2 - 1
    # three replicates <= 0 (-0.2, -0.1, 0), eight >= 0: p = 2 * min(3, 8) / 10
    assert lift.p_value == pytest.approx(0.6)
    # n equally spaced values with step h have sample variance h^2 n (n + 1) / 12
    se = 0.1 * math.sqrt(10 * 11 / 12)
    assert lift.std_error == pytest.approx(se)
    assert lift.mde == pytest.approx((norm.ppf(0.9) + norm.ppf(0.8)) * se)  # alpha 0.2
    # percentile interval, linear interpolation: the 0.1 quantile sits at 0.9 of the way from
    # the 1st to the 2nd sorted value, the 0.9 quantile at 0.1 past the 9th
    assert (lift.ci_low, lift.ci_high) == pytest.approx((-0.2 + 0.09, 0.6 + 0.01))
    assert lift.n_nonfinite == 0


def test_mde_at_alpha_five_percent_and_other_power():
    lift = ab.lift_from_replicates("ips", _estimate(1), _estimate(1), np.ones(10), 1 + LIFTS, 0.05)
    se = 0.1 * math.sqrt(10 * 11 / 12)
    assert lift.mde == pytest.approx((1.959963984540054 + 0.8416212335729143) * se)
    strong = ab.lift_from_replicates("ips", _estimate(1), _estimate(1), np.ones(10), 1 + LIFTS,
                                     0.05, power=0.9)
    assert strong.mde == pytest.approx((norm.ppf(0.975) + norm.ppf(0.9)) * se)


@pytest.mark.parametrize("lifts, p", [
    ([0.1, 0.2, 0.3, 0.4], 0.0),  # every replicate above 0
    ([-0.1, -0.2, -0.3, 0.4], 0.5),  # one of four >= 0
    ([-0.1, 0.0, 0.0, 0.1], 1.0),  # 2 * min(3, 3) / 4 = 1.5, capped at 1
])
def test_p_value_counts_replicates_on_each_side_of_zero(lifts, p):
    lift = ab.lift_from_replicates("x", _estimate(1), _estimate(1), np.full(4, 2.0),
                                   2 * (1 + np.array(lifts)), 0.05)
    assert lift.p_value == pytest.approx(p)


# --- 2. Holm ----------------------------------------------------------------------------------


def test_holm_textbook_example():
    # sorted: 0.005 * 4 = 0.02; 0.01 * 3 = 0.03; 0.03 * 2 = 0.06; 0.04 * 1 = 0.04 -> max 0.06
    assert ab.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # 0.2 * 3 = 0.6; 0.3 * 2 = 0.6; 0.5 * 1 = 0.5 -> carried up to 0.6
    assert ab.holm([0.3, 0.5, 0.2]) == pytest.approx([0.6, 0.6, 0.6])
    assert ab.holm([0.4, 0.5, 0.6]) == [1.0, 1.0, 1.0]  # 1.2, 1.0, 0.6: capped, then carried
    assert ab.holm([0.02]) == [0.02]  # one test: no correction


def test_holm_is_monotone_bounded_and_tied_for_equal_p_values():
    p = np.random.default_rng(0).uniform(0, 0.3, 25)
    p[3] = p[7]
    adjusted = np.array(ab.holm(p.tolist()))
    order = np.argsort(p, kind="stable")
    assert np.all(np.diff(adjusted[order]) >= 0)  # the order of the p-values is kept
    assert np.all(adjusted >= p) and np.all(adjusted <= 1.0)
    assert adjusted[order[0]] == pytest.approx(min(1.0, 25 * p.min()))
    assert adjusted[3] == adjusted[7]


# --- 3. segment lifts -------------------------------------------------------------------------


def _segment_frames():
    """Two tenure segments, one row per member, propensity p, reward r, each policy's target_prob.

    new (members 1-30): type A (1-10) p 0.5, r 1, control 0.5, treatment 1.0 -> w r: 1, 2
                        type B (11-20) p 0.5, r 1, control 1.0, treatment 0.75 -> w r: 2, 1.5
                        type C (21-30) p 0.5, r 0 -> 0, 0
    tenured (31-70):    type D (31-50) p 0.25, r 1, control 0.25, treatment 0.5 -> w r: 1, 2
                        type E (51-70) p 1.0, r 0 -> 0, 0
    member 99 (3 rows) is in segment "trial", under min_rows, so it is left out.
    """
    kinds = [(0.5, 1.0, 0.5, 1.0)] * 10 + [(0.5, 1.0, 1.0, 0.75)] * 10 + [(0.5, 0.0, 1.0, 1.0)] * 10
    kinds += [(0.25, 1.0, 0.25, 0.5)] * 20 + [(1.0, 0.0, 1.0, 1.0)] * 20 + [(1.0, 1.0, 1.0, 1.0)] * 3
    members = list(range(1, 71)) + [99] * 3
    prop, reward, c_tp, t_tp = map(list, zip(*kinds))
    base = pl.DataFrame({"member_id": members, "propensity": prop, "reward": reward})
    segments = pl.DataFrame({"member_id": list(range(1, 71)) + [99],
                             "tenure": ["new"] * 30 + ["tenured"] * 40 + ["trial"]})
    return base.with_columns(target_prob=pl.Series(c_tp)), \
        base.with_columns(target_prob=pl.Series(t_tp)), segments


def test_segment_lifts_match_hand_computed_values_and_bonferroni_intervals():
    control, treatment, segments = _segment_frames()
    boot = Bootstrap(n_boot=400, seed=3, alpha=0.05)
    rows = {s.value: s for s in ab.segment_lifts("ips", control, treatment, segments, boot,
                                                 min_rows=5)}
    assert set(rows) == {"new", "tenured"}
    new, tenured = rows["new"].lift, rows["tenured"].lift
    # new: control (10 * 1 + 10 * 2) / 30 = 1; treatment (10 * 2 + 10 * 1.5) / 30 = 7 / 6
    assert (new.control.value, new.treatment.value) == pytest.approx((1.0, 7 / 6))
    assert new.lift == pytest.approx(1 / 6) and new.control.n == 30
    # tenured: control 20 / 40, treatment 40 / 40; every replicate has treatment = 2 x control
    assert tenured.lift == pytest.approx(1.0)
    assert (tenured.ci_low, tenured.ci_high, tenured.p_value) == pytest.approx((1.0, 1.0, 0.0))
    # new's replicates: with a, b the Poisson totals of types A and B, lift = (a - b/2) / (a + 2b)
    counts = poisson_counts(np.arange(1, 31), 400, seed=3).astype(float)
    a, b = counts[:10].sum(axis=0), counts[10:20].sum(axis=0)
    reps = (a - b / 2) / (a + 2 * b)
    level = 0.05 / 2  # Bonferroni over the two segments kept
    assert (new.ci_low, new.ci_high) == pytest.approx(
        tuple(np.quantile(reps, [level / 2, 1 - level / 2])))
    p_new = min(1.0, 2 * min((reps <= 0).mean(), (reps >= 0).mean()))
    assert new.p_value == pytest.approx(p_new)
    # Holm over (p_new, 0): 0 * 2 = 0, then p_new * 1
    assert rows["new"].p_adjusted == pytest.approx(p_new)
    assert rows["tenured"].p_adjusted == 0.0


# --- 4. the true value of a slate -------------------------------------------------------------


def _two_post_world() -> UserModel:
    """One member (id 10) interested only in topic 0; post 100 (topic 0, quality 0.2) and post
    200 (topic 1, quality -0.3), both created at hour 0, author affinity 0."""
    cfg = WorldConfig(base_logit=-3.0, topic_weight=5.0, author_weight=0.5, freshness_weight=1.0,
                      freshness_halflife_hours=24.0, position_decay=0.7, latent_dim=2)
    return UserModel(cfg, member_ids=np.array([10]), post_ids=np.array([100, 200]),
                     interests=np.array([[1.0, 0.0]]), member_latent=np.zeros((1, 2)),
                     author_latent=np.zeros((1, 2)), post_topic=np.array([0, 1]),
                     post_author=np.array([0, 0]), post_quality=np.array([0.2, -0.3]),
                     post_created=np.array([0.0, 0.0]))


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_true_value_of_a_two_post_world_by_hand():
    truth = _two_post_world()
    at = WORLD_START + dt.timedelta(hours=24)  # one half-life: freshness 0.5
    requests = pl.DataFrame({"request_id": [1, 2], "member_id": [10, 10], "timestamp": [at, at]})
    # logits: post 100: -3 + 5 * 1 + 1 * 0.5 + 0.2 = 2.7; post 200: -3 + 0 + 0.5 - 0.3 = -2.8
    click_100, click_200 = _sigmoid(2.7), _sigmoid(-2.8)
    # request 1: post 100 at slot 1, post 200 at slot 2 (examination 2 ** -0.7); request 2 shows
    # nothing: it counts as a request of no engagement, so the sum is divided by 2
    slate = pl.DataFrame({"request_id": [1, 1], "post_id": [100, 200], "position": [1, 2],
                          "prob": [1.0, 1.0]})
    expected = (click_100 + 2 ** -0.7 * click_200) / 2
    assert ab.true_value(truth, slate, requests) == pytest.approx(expected, rel=1e-12)
    # top slot only (no position column): a stochastic policy, 0.7 / 0.3 on the two posts
    top = pl.DataFrame({"request_id": [1, 1, 2], "post_id": [100, 200, 200],
                        "prob": [0.7, 0.3, 1.0]})
    expected_top = (0.7 * click_100 + 0.3 * click_200 + click_200) / 2
    assert ab.true_value(truth, top, requests) == pytest.approx(expected_top, rel=1e-12)
    # likes follow a click: p_like = p_click * sigmoid(-1 + 2 * affinity + quality)
    like = (click_100 * _sigmoid(-1 + 2 + 0.2)
            + 2 ** -0.7 * click_200 * _sigmoid(-1 + 0 - 0.3)) / 2
    assert ab.true_value(truth, slate, requests, "like") == pytest.approx(like, rel=1e-12)


# --- 5. bootstrap replicates that are NaN or inf ----------------------------------------------


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_a_non_finite_replicate_voids_the_percentile_interval_with_a_warning(bad, caplog):
    reps = np.array([0.1, 0.2, bad, 0.3])
    with caplog.at_level(logging.WARNING, logger="recsim.ope.bootstrap"):
        assert np.isnan(percentile_interval(reps, 0.05, "snips")).all()
    assert "snips: 1 of 4 bootstrap replicates are not finite" in caplog.text
    assert percentile_interval(reps[[0, 1, 3]], 0.5) == pytest.approx((0.15, 0.25))


def test_a_lift_replicate_with_control_zero_is_counted_not_dropped(caplog):
    c_reps, t_reps = np.array([1.0, 0.0, 2.0, 0.0]), np.array([1.5, 1.0, 2.0, 0.0])
    with caplog.at_level(logging.WARNING, logger="recsim.ope.bootstrap"):
        lift = ab.lift_from_replicates("dr", _estimate(1), _estimate(1.2), c_reps, t_reps, 0.05)
    assert lift.lift == pytest.approx(0.2)  # the point estimate stands
    assert lift.n_nonfinite == 2  # 1 / 0 = inf and 0 / 0 = nan
    assert all(np.isnan([lift.ci_low, lift.ci_high, lift.p_value, lift.std_error, lift.mde]))
    assert "dr lift: 2 of 4 bootstrap replicates are not finite" in caplog.text


def test_an_estimate_records_its_non_finite_replicates():
    """Member 1 carries all of num and den: a replicate where its Poisson count is 0 is 0 / 0."""
    cs = ClusterSums(np.array([1, 2]), np.array([[3.0, 2.0], [0.0, 0.0]]), ("num", "den"), 5)
    est, values = finish("snips", cs, lambda t: t["num"] / t["den"], 50, seed=1)
    zero = poisson_counts(np.array([1]), 50, seed=1)[0] == 0
    assert zero.any()  # this seed draws some
    assert est.value == 1.5 and est.n_nonfinite == int(zero.sum())
    assert np.isnan(values[zero]).all() and np.all(values[~zero] == 1.5)
    assert np.isnan(est.ci_low) and np.isnan(est.ci_high)
