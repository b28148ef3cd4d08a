"""Empirical-likelihood intervals for IPS and SNIPS values and their paired lift (the
percentile, studentized and BCa bootstrap intervals are in recsim/ope/intervals.py).

empirical_likelihood
                 the profile empirical-likelihood interval of Karampatziakis, Langford & Mineiro
                 (2020, "Empirical Likelihood for Contextual Bandits", NeurIPS) for the value
                 V = E[w r] of IPS and SNIPS: maximise sum log q_i over distributions Q on the
                 observed (w_i, r_i) plus unobserved mass at w in {w_min, w_max} with any reward
                 in [r_min, r_max], subject to E_Q[w] = 1; the interval is
                 {v : 2 (max loglik - max loglik with E_Q[w r] = v) <= F_{1,n}^-1(1 - alpha)}
                 (the F(1, n) calibration the Vowpal Wabbit `estimators` library uses in its
                 Cressie-Read interval; chi2(1) on request). Solved in the dual (a few Lagrange
                 multipliers, damped projected Newton) and bisection on v.
                 It treats *decisions as independent*: rows of one member are not clustered.
                 When a member's decisions are correlated the interval is too short
                 (tests/test_intervals.py measures by how much).

"""

from __future__ import annotations

import logging
import math

import numpy as np
import polars as pl

from recsim.ope.bootstrap import (Estimate)

__all__ = ["BOOTSTRAP_METHODS", "Interval", "used_terms", "gradient", "influence", "delta_se",
           "replicate_moments", "studentized_interval", "bca_interval", "bootstrap_intervals",
           "bootstrap_interval", "joint_sums", "lift_combine", "lift_intervals",
           "offline_lift_intervals", "empirical_likelihood", "empirical_likelihood_lift",
           "el_estimate", "el_lift"]

from recsim.ope.intervals import Interval

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- empirical likelihood: solver

def _el_dual(rows: np.ndarray, rhs: np.ndarray, counts: np.ndarray,
             lam: np.ndarray | None = None, max_iter: int = 200) -> tuple[float, np.ndarray]:
    """max sum_i c_i log q_i  s.t.  sum_i c_i q_i rows[k, i] <= rhs[k]  (rows >= 0, rhs >= 0).

    rows [K, m] over m distinct atoms with counts c [m]. Solved in the dual: q_i = 1 / (lam .
    rows[:, i]), minimise g(lam) = -sum c log(lam . rows_i) + lam . rhs - N over lam >= 0 by
    damped projected Newton. Returns (the maximum, lam [K]); -inf when infeasible.
    """
    k = rows.shape[0]
    lam = np.full(k, counts.sum() / max(rhs.sum(), 1e-300)) if lam is None else lam.copy()

    def g(x):
        s = x @ rows
        return -np.sum(counts * np.log(s)) + x @ rhs - counts.sum() if np.all(s > 0) else np.inf

    value = g(lam)
    for _ in range(max_iter):
        s = lam @ rows
        grad = rhs - rows @ (counts / s)
        free = (lam > 0) | (grad < 0)
        hess = (rows * (counts / s ** 2)) @ rows.T
        step = np.zeros(k)
        sub = hess[np.ix_(free, free)]
        step[free] = -np.linalg.solve(sub + 1e-12 * np.trace(sub) * np.eye(len(sub)), grad[free])
        t, improved = 1.0, False
        while t > 1e-12:
            trial = np.maximum(lam + t * step, 0.0)
            trial_value = g(trial)
            if trial_value <= value + 1e-4 * grad @ (trial - lam):
                improved = True
                break
            t /= 2
        if not improved or value - trial_value <= 1e-12 * (1 + abs(value)):
            lam, value = (trial, trial_value) if improved else (lam, value)
            break
        lam, value = trial, trial_value
        if not np.isfinite(value) or value < -1e12 * counts.sum():
            return -np.inf, lam
    return float(value), lam


def _el_threshold(n: float, alpha: float, calibration: str) -> float:
    """Half the critical value of the likelihood-ratio statistic: F(1, n) or chi2(1)."""
    from scipy import stats

    if calibration == "f":
        return float(stats.f.isf(alpha, 1, n)) / 2
    if calibration == "chi2":
        return float(stats.chi2.isf(alpha, 1)) / 2
    raise ValueError(f"calibration must be 'f' or 'chi2', not {calibration!r}")


def _crossing(f, inside: float, outside: float, tol: float, max_iter: int = 100) -> float:
    """Where f crosses 0 between `inside` (f >= 0 there) and `outside` (f < 0 or undefined; never
    evaluated). f(x) -> (value, slope); safeguarded Newton: a Newton step that leaves the bracket
    is replaced by bisection. Returns the last inside point (or x once |f(x)| <= 1e-10)."""
    x = 0.5 * (inside + outside)
    for _ in range(max_iter):
        fx, slope = f(x)
        if abs(fx) <= 1e-10:
            return x
        if fx >= 0:
            inside = x
        else:
            outside = x
        if abs(outside - inside) <= tol:
            break
        step = x - fx / slope if np.isfinite(fx) and np.isfinite(slope) and slope != 0 else np.nan
        between = min(inside, outside) < step < max(inside, outside)
        x = step if between else 0.5 * (inside + outside)
    return inside


def _atoms(*columns: np.ndarray, counts: np.ndarray | None = None
           ) -> tuple[list[np.ndarray], np.ndarray]:
    """Distinct rows of the columns with their total counts (the EL only needs those)."""
    stacked = np.stack([np.asarray(c, dtype=float) for c in columns], axis=1)
    weights = np.ones(len(stacked)) if counts is None else np.asarray(counts, dtype=float)
    uniq, inverse = np.unique(stacked, axis=0, return_inverse=True)
    total = np.bincount(inverse.ravel(), weights, minlength=len(uniq))
    keep = total > 0
    return [uniq[keep, j] for j in range(stacked.shape[1])], total[keep]


def _check_el_inputs(w: np.ndarray, r: np.ndarray, reward_range: tuple[float, float],
                     weight_range: tuple[float, float]) -> tuple[float, float, float, float]:
    r_min, r_max = map(float, reward_range)
    if len(w) == 0 or len(w) != len(r):
        raise ValueError("empirical likelihood needs rows: w and r of the same, non-zero length")
    if not (np.all(np.isfinite(w)) and np.all(w >= 0)):
        raise ValueError("empirical likelihood: importance weights must be finite and >= 0")
    if r_min >= r_max or np.any(r < r_min) or np.any(r > r_max):
        raise ValueError(f"empirical likelihood: rewards must lie in the known range "
                         f"[{r_min}, {r_max}] (found [{r.min()}, {r.max()}])")
    w_min, w_max = min(float(weight_range[0]), float(w.min())), max(float(weight_range[1]),
                                                                     float(w.max()))
    if not w_min < 1 < w_max:
        raise ValueError(f"empirical likelihood: need w_min < 1 < w_max, got [{w_min}, {w_max}]")
    return r_min, r_max, w_min, w_max


# ---------------------------------------------------------------- empirical likelihood: value

def empirical_likelihood(w: np.ndarray, r: np.ndarray, alpha: float = 0.05,
                         reward_range: tuple[float, float] = (0.0, 1.0),
                         weight_range: tuple[float, float] = (0.0, math.inf),
                         counts: np.ndarray | None = None, calibration: str = "f") -> Interval:
    """The EL interval for V = E[w r] from rows w [n], r [n] (optional counts [n]).

    Rows are treated as independent draws (not clustered by member). weight_range is the
    *possible* range of w (w_min < 1 < w_max; widened to the observed range): the unobserved
    probability mass of the EL model sits at w_min and w_max. Returns Interval with value = the
    EL maximum-likelihood estimate (its unobserved w-mass given the mean reward, as in the VW
    `mle` estimator) and diagnostics (loglik, threshold, n, unobserved w-mass).
    """
    w, r = np.asarray(w, dtype=float), np.asarray(r, dtype=float)
    r_min, r_max, w_min, w_max = _check_el_inputs(w, r, reward_range, weight_range)
    (wa, ra), c = _atoms(w, r, counts=counts)
    n = float(c.sum())
    base_rows = np.stack([1 - wa / w_max, wa - w_min])  # phantom mass >= 0 at w_max and w_min
    base_rhs = np.array([1 - 1 / w_max, 1 - w_min])
    best, lam = _el_dual(base_rows, base_rhs, c)
    q = 1 / (lam @ base_rows)
    missing = max(0.0, 1 - float(np.sum(c * q * wa)))
    r_bar = float(np.sum(c * ra) / n)
    value = float(np.sum(c * q * wa * ra)) + missing * r_bar
    cut = best - _el_threshold(n, alpha, calibration)
    tol = 1e-9 * (r_max - r_min)
    lam0 = np.append(lam, 0.0)

    def side(row, sign):  # profile loglik - cut and its slope, with row . q <= sign (v - r_bound)
        bound = r_min if sign > 0 else r_max

        def f(v):
            best_v, lam_v = _el_dual(np.vstack([base_rows, row]),
                                     np.append(base_rhs, sign * (v - bound)), c, lam0)
            return best_v - cut, sign * lam_v[-1]  # envelope: d loglik / d rhs = multiplier
        return f

    low_row, high_row = wa * (ra - r_min), wa * (r_max - ra)
    low = r_min if not np.any(low_row > 0) else _crossing(side(low_row, 1), value, r_min, tol)
    high = r_max if not np.any(high_row > 0) else _crossing(side(high_row, -1), value, r_max, tol)
    diag = {"loglik": best, "threshold": cut, "n": n, "unobserved_w_mass": missing,
            "calibration": calibration, "independent_rows": True}
    return Interval("empirical_likelihood", value, low, high, diag)


# ---------------------------------------------------------------- empirical likelihood: lift

def _lift_model(w_c, w_t, r, counts):
    """Atoms and the three base constraints: observed mass <= 1, E[w_c] <= 1, E[w_t] <= 1
    (the rest of E[w] = 1 sits on unobserved rows with w = inf, any reward)."""
    (wc, wt, ra), c = _atoms(w_c, w_t, r, counts=counts)
    rows = np.stack([np.ones_like(wc), wc, wt])
    return wc, wt, ra, c, rows, np.ones(3)


def empirical_likelihood_lift(w_c: np.ndarray, w_t: np.ndarray, r: np.ndarray,
                              alpha: float = 0.05,
                              reward_range: tuple[float, float] = (0.0, 1.0),
                              counts: np.ndarray | None = None, calibration: str = "f"
                              ) -> Interval:
    """The paired EL interval for the lift V_t / V_c - 1 from the same rows.

    w_c, w_t [n]: the two policies' importance weights of each logged decision; r [n] its
    reward in reward_range (r_max > 0). One distribution Q over rows carries both constraints
    E_Q[w_c] = 1 and E_Q[w_t] = 1 (w_min = 0, w_max = inf); the profile over rho = V_t / V_c
    gives the interval {rho : 2 (max loglik - profile(rho)) <= F_{1,n}^-1(1 - alpha)} - 1.
    Rows are treated as independent. diagnostics["p_value"] tests lift = 0 the same way.
    """
    w_c, w_t, r = (np.asarray(x, dtype=float) for x in (w_c, w_t, r))
    r_min, r_max, _, _ = _check_el_inputs(w_c, r, reward_range, (0.0, math.inf))
    _check_el_inputs(w_t, r, reward_range, (0.0, math.inf))
    wc, wt, ra, c, rows, rhs = _lift_model(w_c, w_t, r, counts)
    n = float(c.sum())
    best, lam = _el_dual(rows, rhs, c)
    q = 1 / (lam @ rows)
    r_bar = float(np.sum(c * ra) / n)
    v_c = float(np.sum(c * q * wc * ra)) + max(0.0, 1 - float(np.sum(c * q * wc))) * r_bar
    v_t = float(np.sum(c * q * wt * ra)) + max(0.0, 1 - float(np.sum(c * q * wt))) * r_bar
    rho_hat = v_t / v_c if v_c > 0 else math.inf
    half = _el_threshold(n, alpha, calibration)
    lam0 = np.append(lam, 0.0)

    def profile(rho: float, low_side: bool) -> tuple[float, float]:
        """Max loglik over Q whose attainable ratio reaches rho, and its slope in rho."""
        if low_side:  # rho_low(Q) <= rho
            d_row, b, db = wc * (r_max - ra), rho * r_max - r_min, r_max
            row = wt * (ra - r_min) + rho * d_row
        else:  # rho_high(Q) >= rho
            d_row, b, db = wc * (ra - r_min), r_max - rho * r_min, -r_min
            row = wt * (r_max - ra) + rho * d_row
        if b <= 0:
            return -math.inf, math.inf
        value, lam_r = _el_dual(np.vstack([rows, row]), np.append(rhs, b), c, lam0)
        q = 1 / (lam_r @ np.vstack([rows, row]))
        return value, lam_r[-1] * (db - float(np.sum(c * q * d_row)))

    low, high = _lift_bounds(profile, rho_hat, best - half, r_min / r_max, wt * (ra - r_min),
                             wc * (r_max - ra))
    at_one = profile(1.0, rho_hat > 1.0)[0]
    p = _el_p_value(2 * (best - at_one), n, calibration)
    diag = {"loglik": best, "threshold": best - half, "n": n, "control_value": v_c,
            "treatment_value": v_t, "p_value": p, "calibration": calibration,
            "independent_rows": True}
    return Interval("empirical_likelihood", rho_hat - 1, low - 1, high - 1, diag)


def _lift_bounds(profile, rho_hat: float, cut: float, rho_floor: float, t_row: np.ndarray,
                 c_row: np.ndarray) -> tuple[float, float]:
    """Ends of {rho : profile(rho) >= cut}: below rho_hat down to rho_floor = r_min / r_max;
    above it by doubling, then the crossing (inf when still inside at 2^40 rho_hat).
    t_row + rho_floor c_row is the low-side row at the floor: all zero means it is attained."""
    if not np.isfinite(rho_hat):
        return float("nan"), math.inf
    tol = 1e-9 * max(rho_hat, 1e-12)

    def low_side(x):
        value, slope = profile(x, True)
        return value - cut, slope

    def high_side(x):
        value, slope = profile(x, False)
        return value - cut, slope

    attained = not np.any(t_row + rho_floor * c_row > 0)
    low = rho_floor if attained else _crossing(low_side, rho_hat, rho_floor, tol)
    outside = max(2 * rho_hat, 1e-12)
    for _ in range(40):
        if profile(outside, False)[0] < cut:
            break
        outside *= 2
    else:
        return low, math.inf
    return low, _crossing(high_side, rho_hat, outside, tol)


def _el_p_value(stat: float, n: float, calibration: str) -> float:
    from scipy import stats

    if not np.isfinite(stat):
        return 0.0
    stat = max(stat, 0.0)
    return float(stats.f.sf(stat, 1, n) if calibration == "f" else stats.chi2.sf(stat, 1))


# ---------------------------------------------------------------- Estimate / Lift wrappers

def _weights_rewards(frame: pl.DataFrame, source: str) -> tuple[np.ndarray, np.ndarray]:
    from recsim.ope.estimators import check_decisions

    check_decisions(frame, source)
    w = (frame["target_prob"] / frame["propensity"]).cast(pl.Float64).to_numpy()
    return w, frame["reward"].cast(pl.Float64).to_numpy()


def el_estimate(name: str, frame: pl.DataFrame, alpha: float = 0.05,
                reward_range: tuple[float, float] = (0.0, 1.0),
                weight_range: tuple[float, float] = (0.0, math.inf),
                calibration: str = "f", source: str = "decisions") -> Estimate:
    """Estimate(name, value of the ips / snips estimator, EL interval, n decisions, diagnostics).

    One row per decision (not slates). The interval is for the policy value E[w r] that both
    estimators target, so it need not contain the IPS value (IPS can leave [r_min, r_max]);
    diagnostics["el_value"] is the EL estimate, which it does contain.
    """
    if name not in ("ips", "snips"):
        raise ValueError(f"empirical likelihood intervals are for 'ips' and 'snips', not {name!r}")
    w, r = _weights_rewards(frame, source)
    el = empirical_likelihood(w, r, alpha, reward_range, weight_range, calibration=calibration)
    value = float(np.mean(w * r)) if name == "ips" else float(np.sum(w * r) / np.sum(w))
    diag = {**el.diagnostics, "el_value": el.value, "interval": el.method,
            "effective_sample_size": float(w.sum() ** 2 / np.sum(w ** 2)) if w.any() else 0.0}
    return Estimate(name, value, el.low, el.high, len(w), diag)


def el_lift(name: str, control: pl.DataFrame, treatment: pl.DataFrame, alpha: float = 0.05,
            reward_range: tuple[float, float] = (0.0, 1.0), calibration: str = "f"):
    """ab.Lift with the paired EL interval and EL p-value (std_error and mde are nan: EL gives
    no standard error). `control` and `treatment` are the same logged decisions."""
    from recsim.ope.ab import Lift, _check_same_requests

    _check_same_requests(control, treatment)
    w_c, r = _weights_rewards(control, "control decisions")
    w_t, _ = _weights_rewards(treatment, "treatment decisions")
    out = empirical_likelihood_lift(w_c, w_t, r, alpha, reward_range, calibration=calibration)
    c = el_estimate(name, control, alpha, reward_range, calibration=calibration)
    t = el_estimate(name, treatment, alpha, reward_range, calibration=calibration)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = float(np.float64(t.value) / c.value - 1)
    log.info("EL lift %s: %.4f [%.4f, %.4f] (EL estimate %.4f)", name, value, out.low, out.high,
             out.value)
    return Lift(name, c, t, value, out.low, out.high, out.diagnostics["p_value"])
