"""Second-order (recsim/ope/intervals.py) and empirical-likelihood
(recsim/ope/empirical_likelihood.py) intervals: hand-solved cases, brute-force profile
likelihoods, properties, the hooks, and coverage on a simulated bandit."""

import logging
import math

import numpy as np
import polars as pl
import pytest
from scipy import optimize, stats

from recsim.ope import ab
from recsim.ope import empirical_likelihood as elm
from recsim.ope import intervals as iv
from recsim.ope.bootstrap import ClusterSums, finish, percentile_interval, poisson_counts, ratio
from recsim.ope.estimators import Bootstrap, estimate

log = logging.getLogger(__name__)


def _sums(num, den, ids=None):
    num, den = np.asarray(num, float), np.asarray(den, float)
    ids = np.arange(1, len(num) + 1) if ids is None else np.asarray(ids)
    return ClusterSums(ids, np.stack([num, den], axis=1), ("num", "den"), len(num))


# ---------------------------------------------------------------- delta method, by hand

def test_delta_method_se_of_a_ratio_by_hand():
    # 4 members: num 1, 2, 0, 3; den 2, 2, 1, 3 -> theta = 6 / 8 = 0.75
    # u_g = (num_g - theta den_g) / 8 = -0.0625, 0.0625, -0.09375, 0.09375
    cs = _sums([1, 2, 0, 3], [2, 2, 1, 3])
    theta, u = iv.influence(cs, ratio)
    assert theta == 0.75
    assert u == pytest.approx([-0.0625, 0.0625, -0.09375, 0.09375], rel=1e-7)
    assert iv.delta_se(cs, ratio) == pytest.approx(math.sqrt(0.025390625), rel=1e-8)


def test_delta_method_se_of_a_mean_is_the_textbook_one():
    x = np.array([0.0, 4.0, 0.0, 8.0, 4.0])  # IPS: one decision per member
    cs = _sums(x, np.ones(5))
    assert iv.delta_se(cs, ratio) == pytest.approx(np.sqrt(np.sum((x - x.mean()) ** 2)) / 5)


def test_used_terms_reads_only_what_combine_reads():
    terms = ("dm", "one", "corr", "w", "_w", "_w2")
    sndr = lambda t: t["dm"] / t["one"] + t["corr"] / t["w"]  # noqa: E731
    assert iv.used_terms(sndr, terms) == ("dm", "one", "corr", "w")


def test_replicate_standard_errors_match_a_direct_computation():
    rng = np.random.default_rng(5)
    cs = _sums(rng.random(30) * 3, rng.random(30) + 0.5, ids=rng.choice(1000, 30, replace=False))
    theta, se, u, theta_star, se_star = iv._replicate_values(cs, ratio, 7, seed=3)
    counts = poisson_counts(cs.ids, 7, 3).astype(float)  # [G, B]
    for b in range(7):
        n_b = counts[:, b]
        num, den = n_b @ cs.sums[:, 0], n_b @ cs.sums[:, 1]
        resid = (cs.sums[:, 0] - num / den * cs.sums[:, 1]) / den
        assert theta_star[b] == pytest.approx(num / den, rel=1e-12)
        assert se_star[b] == pytest.approx(np.sqrt(np.sum(n_b * resid ** 2)), rel=1e-6)
    assert se == pytest.approx(iv.delta_se(cs, ratio))


# ---------------------------------------------------------------- the interval formulas

def test_bca_without_bias_or_acceleration_is_the_percentile_interval():
    assert iv.bca_levels(0.0, 0.0, 0.1) == pytest.approx((0.05, 0.95))
    rng = np.random.default_rng(0)
    half = np.sort(rng.exponential(size=200))
    theta_star = np.concatenate([1 - half, 1 + 2 * half])  # skewed, exactly half below theta=1
    u = np.array([-1.0, 1.0, -2.0, 2.0])  # symmetric: a = 0
    lo, hi, z0, a = iv.bca_interval(1.0, theta_star, u, 0.05)
    assert z0 == 0.0 and a == 0.0
    assert (lo, hi) == percentile_interval(theta_star, 0.05)


def test_bca_levels_follow_efron():
    z0, a, alpha = 0.2, 0.05, 0.05
    nd = stats.norm
    for z, level in zip(nd.ppf([0.025, 0.975]), iv.bca_levels(z0, a, alpha)):
        assert level == pytest.approx(nd.cdf(z0 + (z0 + z) / (1 - a * (z0 + z))))
    lo, hi, z0_hat, a_hat = iv.bca_interval(0.0, np.array([-1.0, 1.0, 2.0, 3.0]),
                                            np.array([1.0, 1.0, -2.0]), 0.05)
    assert z0_hat == pytest.approx(nd.ppf(0.25))  # one replicate in four below theta
    assert a_hat == pytest.approx((1 + 1 - 8) / (6 * 6 ** 1.5))
    ties = iv.bca_interval(0.0, np.array([-1.0, 0.0, 0.0, 1.0, 2.0, 3.0]), np.ones(2), 0.05)
    assert ties[2] == pytest.approx(nd.ppf(2 / 6))  # (1 below + 2 ties / 2) of 6


def test_studentized_interval_reflects_the_t_quantiles():
    # t* = (theta* - 1) / 0.5 = -2, 0, 0, ..., 6 (right-skewed): the interval reaches far left
    theta_star = np.array([0.0] + [1.0] * 8 + [4.0])
    se_star = np.full(10, 0.5)
    lo, hi = iv.studentized_interval(1.0, 0.2, theta_star, se_star, 0.2)
    t_lo, t_hi = np.quantile((theta_star - 1) / 0.5, [0.1, 0.9])
    assert (lo, hi) == pytest.approx((1 - t_hi * 0.2, 1 - t_lo * 0.2))
    assert 1 - lo > hi - 1
    assert iv.studentized_interval(0.3, 0.0, theta_star, se_star, 0.05) == (0.3, 0.3)


# ---------------------------------------------------------------- properties

def _bandit_sums(n, seed, estimator="ips", scale=1.0):
    rng = np.random.default_rng(seed)
    action = rng.integers(0, 4, n)
    w = 4.0 * (action == 3)
    r = scale * (rng.random(n) < 0.4)
    den = np.ones(n) if estimator == "ips" else w
    return _sums(w * r, den, ids=np.arange(n)), w, r / scale


@pytest.mark.parametrize("estimator", ["ips", "snips"])
def test_intervals_contain_the_estimate_and_widen_with_confidence(estimator):
    cs, w, r = _bandit_sums(300, 1, estimator)
    wide = iv.bootstrap_intervals(iv.BOOTSTRAP_METHODS, cs, ratio, 400, 0, 0.01)
    narrow = iv.bootstrap_intervals(iv.BOOTSTRAP_METHODS, cs, ratio, 400, 0, 0.2)
    for method in iv.BOOTSTRAP_METHODS:
        assert wide[method].low <= narrow[method].low <= narrow[method].value
        assert narrow[method].value <= narrow[method].high <= wide[method].high
    el_wide, el_narrow = elm.empirical_likelihood(w, r, 0.01), elm.empirical_likelihood(w, r, 0.2)
    assert el_wide.low < el_narrow.low <= el_narrow.value <= el_narrow.high < el_wide.high


def test_percentile_method_is_the_one_finish_gives():
    cs, _, _ = _bandit_sums(300, 2)
    est, _ = finish("ips", cs, ratio, 300, 4, 0.1)
    mine = iv.bootstrap_interval("percentile", cs, ratio, 300, 4, 0.1)
    assert (mine.low, mine.high) == pytest.approx((est.ci_low, est.ci_high), rel=1e-12)


@pytest.mark.parametrize("estimator", ["ips", "snips"])
def test_bootstrap_t_scales_with_the_rewards(estimator):
    cs, _, _ = _bandit_sums(200, 3, estimator)
    scaled, _, _ = _bandit_sums(200, 3, estimator, scale=7.5)
    a = iv.bootstrap_interval("studentized", cs, ratio, 300, 1)
    b = iv.bootstrap_interval("studentized", scaled, ratio, 300, 1)
    assert (b.value, b.low, b.high) == pytest.approx((7.5 * a.value, 7.5 * a.low, 7.5 * a.high),
                                                     rel=1e-9)


# ---------------------------------------------------------------- empirical likelihood vs brute force

W = np.array([0.0, 2.0, 2.0, 0.5, 4.0, 0.0, 1.5, 3.0])  # mean 13/8: unobserved mass at w = 0
W_LOW = np.array([0.0, 2.0, 0.0, 0.5, 3.0, 0.0, 1.5, 0.0])  # mean 7/8: large weights unseen
R = np.array([1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.5, 0.2])


def _brute_profile(w, r, w_max, v=None):
    """max sum log q over observed q and phantom atoms at (0, 0), (0, 1), (w_max, 0), (w_max, 1)
    (probability mass not in the likelihood) with E[w] = 1 (and E[w r] = v), by SLSQP."""
    n = len(w)
    pw = np.array([0.0, 0.0, w_max, w_max])
    pr = np.array([0.0, 1.0, 0.0, 1.0])
    cons = [{"type": "eq", "fun": lambda x: np.sum(x) - 1},
            {"type": "eq", "fun": lambda x: x[:n] @ w + x[n:] @ pw - 1}]
    if v is not None:
        cons.append({"type": "eq", "fun": lambda x: x[:n] @ (w * r) + x[n:] @ (pw * pr) - v})
    return _slsqp(n, 4, cons)


def _brute_profile_inf(w, r, v=None):
    """The w_max = inf model written out: q, phantom w-mass m, its reward mass y in [0, m]."""
    n = len(w)
    cons = [{"type": "ineq", "fun": lambda x: 1 - np.sum(x[:n])},
            {"type": "eq", "fun": lambda x: x[:n] @ w + x[n] - 1},
            {"type": "ineq", "fun": lambda x: x[n] - x[n + 1]}]
    if v is not None:
        cons.append({"type": "eq", "fun": lambda x: x[:n] @ (w * r) + x[n + 1] - v})
    return _slsqp(n, 2, cons)


def _slsqp(n, extra, cons):
    x0 = np.full(n + extra, 1.0 / (n + extra))
    bounds = [(1e-9, 1.0)] * n + [(0.0, None)] * extra
    best = -np.inf
    for start in (x0, np.r_[np.full(n, 1.0 / n), np.zeros(extra)]):
        res = optimize.minimize(lambda x: -np.sum(np.log(x[:n])), start, method="SLSQP",
                                bounds=bounds, constraints=cons,
                                options={"ftol": 1e-13, "maxiter": 500})
        feasible = all(c["fun"](res.x) > -1e-7 if c["type"] == "ineq" else
                       abs(c["fun"](res.x)) < 1e-7 for c in cons)
        if feasible:
            best = max(best, -res.fun)
    return best


def _brute_interval(profile, n, alpha, grid):
    """Scan the profile on a grid; refine each crossing of the critical value with brentq."""
    best = profile(None)
    crit = stats.f.isf(alpha, 1, n) / 2
    gap = np.array([best - profile(v) - crit for v in grid])
    inside = np.flatnonzero(gap <= 0)
    lo_i, hi_i = inside[0], inside[-1]
    f = lambda v: best - profile(v) - crit  # noqa: E731
    low = grid[0] if lo_i == 0 else optimize.brentq(f, grid[lo_i - 1], grid[lo_i], xtol=1e-7)
    high = grid[-1] if hi_i == len(grid) - 1 else optimize.brentq(f, grid[hi_i], grid[hi_i + 1],
                                                                   xtol=1e-7)
    return best, low, high


@pytest.mark.parametrize("w", [W, W_LOW], ids=["mean_w_above_1", "mean_w_below_1"])
def test_empirical_likelihood_matches_a_brute_force_profile_with_known_w_max(w):
    grid = np.linspace(0.01, 0.99, 20)
    best, low, high = _brute_interval(lambda v: _brute_profile(w, R, 5.0, v), len(w), 0.1, grid)
    el = elm.empirical_likelihood(w, R, 0.1, weight_range=(0.0, 5.0))
    assert el.diagnostics["loglik"] == pytest.approx(best, abs=1e-6)
    assert (el.low, el.high) == pytest.approx((low, high), abs=2e-5)
    assert el.low < el.value < el.high


@pytest.mark.parametrize("w", [W, W_LOW], ids=["mean_w_above_1", "mean_w_below_1"])
def test_empirical_likelihood_matches_a_brute_force_profile_with_unbounded_weights(w):
    grid = np.linspace(0.01, 0.99, 20)
    best, low, high = _brute_interval(lambda v: _brute_profile_inf(w, R, v), len(w), 0.1, grid)
    el = elm.empirical_likelihood(w, R, 0.1)
    assert el.diagnostics["loglik"] == pytest.approx(best, abs=1e-6)
    assert (el.low, el.high) == pytest.approx((low, high), abs=2e-5)


def test_a_known_w_max_matters_when_large_weights_are_unseen():
    known = elm.empirical_likelihood(W_LOW, R, 0.1, weight_range=(0.0, 5.0))
    unbounded = elm.empirical_likelihood(W_LOW, R, 0.1)
    assert unbounded.diagnostics["unobserved_w_mass"] == pytest.approx(1 / 8)
    assert unbounded.low < known.low and known.high < unbounded.high


def _brute_lift_profile(w_c, w_t, r, rho=None):
    """Lift model written out: q; per arm a phantom w-mass m and its reward mass y in [0, m]."""
    n = len(r)
    vc = lambda x: x[:n] @ (w_c * r) + x[n + 1]  # noqa: E731
    vt = lambda x: x[:n] @ (w_t * r) + x[n + 3]  # noqa: E731
    cons = [{"type": "ineq", "fun": lambda x: 1 - np.sum(x[:n])},
            {"type": "eq", "fun": lambda x: x[:n] @ w_c + x[n] - 1},
            {"type": "eq", "fun": lambda x: x[:n] @ w_t + x[n + 2] - 1},
            {"type": "ineq", "fun": lambda x: x[n] - x[n + 1]},
            {"type": "ineq", "fun": lambda x: x[n + 2] - x[n + 3]}]
    if rho is not None:
        cons.append({"type": "eq", "fun": lambda x: vt(x) - rho * vc(x)})
    return _slsqp(n, 4, cons)


def test_empirical_likelihood_lift_matches_a_brute_force_profile():
    w_c = np.array([2.0, 0.0, 2.0, 0.0, 2.0, 0.0, 2.0, 0.0, 1.0, 1.0])
    w_t = np.array([2.0, 2.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 1.0, 1.0])  # mean 0.8
    r = np.array([1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0])
    grid = np.linspace(0.05, 8.0, 25)
    best, low, high = _brute_interval(lambda x: _brute_lift_profile(w_c, w_t, r, x), len(r),
                                      0.2, grid)
    el = elm.empirical_likelihood_lift(w_c, w_t, r, 0.2)
    assert el.diagnostics["loglik"] == pytest.approx(best, abs=1e-6)
    assert (el.low + 1, el.high + 1) == pytest.approx((low, high), abs=1e-4)
    assert el.low < el.value < el.high
    assert el.diagnostics["p_value"] == 1.0  # rho = 1 lies where the profile is flat (unseen mass)


def test_empirical_likelihood_edge_cases_and_errors():
    no_reward = elm.empirical_likelihood(W, np.zeros_like(W))
    assert no_reward.low == 0.0 and no_reward.value == 0.0 < no_reward.high
    with pytest.raises(ValueError, match="known range"):
        elm.empirical_likelihood(W, R + 1)
    with pytest.raises(ValueError, match="w_min < 1 < w_max"):
        elm.empirical_likelihood(np.full(4, 1.0), np.ones(4), weight_range=(1.0, 1.0))
    with pytest.raises(ValueError, match="calibration"):
        elm.empirical_likelihood(W, R, calibration="normal")
    chi2 = elm.empirical_likelihood(W, R, calibration="chi2")  # chi2(1) < F(1, 8): narrower
    f = elm.empirical_likelihood(W, R)
    assert f.low < chi2.low and chi2.high < f.high
    counts = elm.empirical_likelihood(W[:4], R[:4], counts=[2, 2, 2, 2])
    doubled = elm.empirical_likelihood(np.tile(W[:4], 2), np.tile(R[:4], 2))
    assert (counts.low, counts.high) == pytest.approx((doubled.low, doubled.high), abs=1e-9)


# ---------------------------------------------------------------- the paired lift

def test_lift_linearisation_is_the_chain_rule_of_both_arms():
    rng = np.random.default_rng(9)
    c = _sums(rng.random(12), rng.random(12) + 0.5)
    t = _sums(rng.random(12) * 2, rng.random(12) + 0.5)
    (tc, uc), (tt, ut) = iv.influence(c, ratio), iv.influence(t, ratio)
    terms = ("num", "den")
    joint = iv.joint_sums(c, t, terms, terms)
    lift, u = iv.influence(joint, iv.lift_combine(ratio, ratio, terms, terms))
    assert lift == pytest.approx(tt / tc - 1)
    assert u == pytest.approx(ut / tc - tt * uc / tc ** 2, rel=1e-6)
    with pytest.raises(ValueError, match="same members"):
        iv.joint_sums(c, _sums(np.ones(11), np.ones(11)), terms, terms)


def _frames(n=400, seed=0):
    """The logged decisions with two policies' target probabilities (one decision per member)."""
    rng = np.random.default_rng(seed)
    action = rng.integers(0, 4, n)
    reward = (rng.random(n) < np.array([0.1, 0.2, 0.3, 0.4])[action]).astype(float)
    base = pl.DataFrame({"member_id": rng.integers(0, n // 3, n), "propensity": np.full(n, 0.25),
                         "reward": reward})
    control = base.with_columns(target_prob=pl.Series((action == 2).astype(float)))
    treatment = base.with_columns(target_prob=pl.Series((action == 3).astype(float)))
    return control, treatment


# ---------------------------------------------------------------- the hooks

def test_default_interval_leaves_todays_numbers_unchanged():
    control, _ = _frames()
    before, reps = estimate("snips", control, Bootstrap(200, seed=1))
    cs_est = estimate("snips", control, Bootstrap(200, seed=1, interval="percentile"))
    assert (before.ci_low, before.ci_high) == (cs_est[0].ci_low, cs_est[0].ci_high)
    assert "interval" not in before.diagnostics
    with pytest.raises(ValueError, match="Bootstrap.interval"):
        Bootstrap(interval="empirical_likelihood")


@pytest.mark.parametrize("method", ["studentized", "bca"])
def test_bootstrap_interval_argument_reaches_every_estimate(method):
    control, treatment = _frames()
    est, reps = estimate("snips", control, Bootstrap(200, seed=1, interval=method))
    _, plain_reps = estimate("snips", control, Bootstrap(200, seed=1))
    assert np.array_equal(reps, plain_reps) and est.diagnostics["interval"] == method
    assert est.ci_low <= est.value <= est.ci_high
    lift = ab.offline_lift("snips", control, treatment, Bootstrap(200, seed=1, interval=method))
    plain = ab.offline_lift("snips", control, treatment, Bootstrap(200, seed=1))
    assert lift.lift == plain.lift and lift.p_value == plain.p_value
    assert (lift.ci_low, lift.ci_high) != (plain.ci_low, plain.ci_high)
    assert lift.ci_low <= lift.lift <= lift.ci_high
    self_lift = ab.offline_lift("snips", control, control, Bootstrap(100, interval=method))
    assert self_lift.ci_low == 0.0 and self_lift.ci_high == 0.0


def test_el_wrappers():
    control, treatment = _frames()
    est = elm.el_estimate("snips", control, 0.05)
    assert est.ci_low <= est.diagnostics["el_value"] <= est.ci_high and est.n == control.height
    with pytest.raises(ValueError, match="'ips' and 'snips'"):
        elm.el_estimate("dr", control)
    lift = elm.el_lift("ips", control, treatment)
    assert lift.ci_low < lift.lift < lift.ci_high and 0 <= lift.p_value <= 1
    assert math.isnan(lift.std_error)


# ---------------------------------------------------------------- coverage (slow)

CTR = np.array([[0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1]])  # [context, action]
TREAT, CONTROL = np.array([3, 0]), np.array([3, 3])  # deterministic policies; agree in context 0
V_T, V_C = 0.4, 0.25  # true values (contexts equally likely); true lift 0.6
N_BOOT = 400


def _simulate(ess: int, seed: int, per_member: int):
    """Uniform logging over 4 actions: n = 4 ess decisions (ESS of a deterministic target ~ ess).
    per_member > 1: members share a click propensity multiplier ~ U(0, 2) (clustered rows)."""
    rng = np.random.default_rng(seed)
    n = 4 * ess
    ctx, action = rng.integers(0, 2, n), rng.integers(0, 4, n)
    member = np.arange(n) // per_member
    mult = rng.uniform(0, 2, member[-1] + 1)[member] if per_member > 1 else 1.0
    reward = (rng.random(n) < CTR[ctx, action] * mult).astype(float)
    return member, 4.0 * (action == TREAT[ctx]), 4.0 * (action == CONTROL[ctx]), reward


def _member_sums(member, w, r, estimator):
    den = np.ones_like(w) if estimator == "ips" else w
    sums = np.stack([np.bincount(member, w * r), np.bincount(member, den)], axis=1)
    return ClusterSums(np.arange(len(sums)), sums, ("num", "den"), len(w))


def _one_dataset(ess, seed, per_member, alpha=0.05):
    """(method -> (low, high)) for the treatment's IPS / SNIPS value and the paired lift."""
    member, w_t, w_c, r = _simulate(ess, seed, per_member)
    out = {}
    for est in ("ips", "snips"):
        got = iv.bootstrap_intervals(iv.BOOTSTRAP_METHODS, _member_sums(member, w_t, r, est),
                                     ratio, N_BOOT, seed, alpha)
        out.update({(est, m): (i.low, i.high) for m, i in got.items()})
    el = elm.empirical_likelihood(w_t, r, alpha)
    out[("value", "empirical_likelihood")] = (el.low, el.high)
    lifts = iv.lift_intervals(iv.BOOTSTRAP_METHODS, _member_sums(member, w_c, r, "snips"), ratio,
                              _member_sums(member, w_t, r, "snips"), ratio, N_BOOT, seed, alpha)
    out.update({("lift", m): (i.low, i.high) for m, i in lifts.items()})
    el_lift = elm.empirical_likelihood_lift(w_c, w_t, r, alpha)
    out[("lift", "empirical_likelihood")] = (el_lift.low, el_lift.high)
    return out


def coverage_table(ess_values=(50, 200, 1000), n_seeds=100, per_member=1):
    """{(ess, target, method): (coverage, mean width)} over n_seeds simulated logs."""
    table = {}
    for ess in ess_values:
        hits: dict = {}
        for seed in range(n_seeds):
            for key, (lo, hi) in _one_dataset(ess, 10_000 * ess + seed, per_member).items():
                truth = (V_T / V_C - 1) if key[0] == "lift" else V_T
                hits.setdefault(key, []).append((lo <= truth <= hi, hi - lo))
        for (target, method), rows in hits.items():
            covered, width = np.array(rows).T
            table[(ess, target, method)] = (float(covered.mean()), float(np.mean(width)))
            log.info("per_member=%d ess=%d %s %s: coverage %.3f width %.3f", per_member, ess,
                     target, method, covered.mean(), np.mean(width))
    return table


@pytest.mark.slow
@pytest.mark.parametrize("per_member", [1, 4, 20])
def test_coverage_on_a_simulated_bandit(per_member):
    """Floors fixed before measuring: the second-order bootstrap intervals cover >= 85% at every
    ESS (>= 90% at ESS 1000) with 1 or 4 decisions per member; EL too when rows are independent
    (per_member = 1). EL with clustered rows and the percentile interval are measured, not
    asserted. per_member = 20 is measured only: it was added after the 4-per-member run showed a
    design effect of ~1.1 (member-bootstrap widths 5% above the independent design), too mild to
    show what EL's row-independence costs; at 20 the design effect is ~1.7."""
    table = coverage_table(n_seeds=100, per_member=per_member)
    for (ess, target, method), (cov, width) in table.items():
        # A non-finite replicate voids a percentile interval (bootstrap.percentile_interval): a
        # lift replicate with control 0, or an empty Poisson resample of 10 members (per_member 20).
        assert np.isfinite(width) or method == "percentile" or (
            target == "lift" and method == "empirical_likelihood")
        asserted = per_member <= 4 and (method in ("studentized", "bca") or (
            method == "empirical_likelihood" and per_member == 1))
        if asserted:
            assert cov >= (0.90 if ess == 1000 else 0.85), (ess, target, method, cov)
