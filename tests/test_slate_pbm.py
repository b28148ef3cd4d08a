"""The position-based model's slate estimator (recsim/ope/slate_pbm.py): hand-computed weights and
estimates, the examination weights against the truth of a simulated position-based log, and pbm
against the true value of a target policy on that log."""

import numpy as np
import polars as pl
import pytest

from recsim.jobs.validity import run_rows, summarize
from recsim.ope.estimators import Bootstrap, evaluate
from recsim.ope.slate_offline import slate_decisions, slate_marginals
from recsim.ope.slate_pbm import add_exposures, examination_weights, exposures, with_exposures
from recsim.world import slates

# --- a hand case: 2 requests, 3 slots -----------------------------------------------------------

BETA = np.array([1.0, 0.5, 0.25])
# Rows: the logged post of slot k; columns: its marginal at slot j. Request 1 logged a, b, c;
# request 2 logged d, e, f. The diagonals are the logged posts at their own slots.
LOGGING_BY_SLOT = np.array([
    [[0.5, 0.3, 0.2], [0.3, 0.4, 0.3], [0.2, 0.3, 0.5]],
    [[0.6, 0.2, 0.2], [0.2, 0.6, 0.2], [0.2, 0.2, 0.6]],
])
# The target shows a at slot 2 and c at slot 1, never b (request 1); d and e at slots 1-2 half
# and half, f at slot 3 (request 2).
TARGET_BY_SLOT = np.array([
    [[0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]],
    [[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]],
])
REWARD = [1.0, 0.0, 1.0, 0.0, 1.0, 1.0]
# Exposures sum_j beta_j marginal_j of the rewarded rows: a: target 0.5, logging 0.5 + 0.15 +
# 0.05 = 0.7; c: 1 / (0.2 + 0.15 + 0.125); e: (0.5 + 0.25) / (0.2 + 0.3 + 0.05); f: 0.25 /
# (0.2 + 0.1 + 0.15).
PBM = (0.5 / 0.7 + 1 / 0.475 + 0.75 / 0.55 + 0.25 / 0.45) / 2
IIPS = (0 / 0.5 + 0 / 0.5 + 0.5 / 0.6 + 1 / 0.6) / 2  # a and c are not at their logged slots


def _hand_frame() -> pl.DataFrame:
    diag = np.arange(3)
    return pl.DataFrame({
        "request_id": [1, 1, 1, 2, 2, 2], "member_id": [10, 10, 10, 20, 20, 20],
        "position": pl.Series([1, 2, 3] * 2, dtype=pl.Int32), "propensity": [0.5] * 6,
        "target_prob": [0.0] * 6, "reward": REWARD,
        "logging_marginal": LOGGING_BY_SLOT[:, diag, diag].ravel(),
        "target_marginal": TARGET_BY_SLOT[:, diag, diag].ravel(),
        "target_marginal_by_slot": TARGET_BY_SLOT.reshape(6, 3),
    })


def test_pbm_by_hand_uses_rows_that_iips_weighs_zero():
    frame = with_exposures(_hand_frame(), LOGGING_BY_SLOT, BETA)
    assert frame["logging_exposure"][0] == pytest.approx(0.7)
    assert frame["target_exposure"].to_list() == pytest.approx(
        [0.5, 0.0, 1.0, 0.75, 0.75, 0.25])
    est = evaluate(["pbm", "iips"], frame, Bootstrap(50))
    assert est["pbm"][0].value == pytest.approx(PBM)
    assert est["iips"][0].value == pytest.approx(IIPS)
    assert est["pbm"][0].n == 2  # decisions are requests
    w = np.array([0.5 / 0.7, 0.0, 1 / 0.475, 0.75 / 0.75, 0.75 / 0.55, 0.25 / 0.45])  # d: 1
    ess = est["pbm"][0].diagnostics["effective_sample_size"]
    assert ess == pytest.approx(w.sum() ** 2 / (w ** 2).sum())


def test_the_logged_slot_takes_the_frames_logging_marginal():
    """A Monte Carlo 0 at the logged slot itself cannot leave a logged post without exposure."""
    by_slot = LOGGING_BY_SLOT.copy()
    by_slot[0, 0, 0] = 0.0
    logging, _ = exposures(by_slot, TARGET_BY_SLOT, LOGGING_BY_SLOT[:, [0, 1, 2], [0, 1, 2]],
                           BETA)
    assert logging[0, 0] == pytest.approx(0.7)


def test_examination_weights_by_hand():
    # Terms reward / logging_marginal: request 1 [2, 0, 2], request 2 [4, 2, 0]; means [3, 1, 1].
    frame = pl.DataFrame({"request_id": [1, 1, 1, 2, 2, 2], "member_id": [10, 10, 10, 20, 20, 20],
                          "position": [1, 2, 3] * 2, "reward": [1.0, 0, 1, 1, 1, 0],
                          "logging_marginal": [0.5, 0.25, 0.5, 0.25, 0.5, 0.2]})
    weights = examination_weights(frame)
    assert weights.beta == pytest.approx([1.0, 1 / 3, 1 / 3])
    # Residuals t_k - beta_k t_1: slot 2 (-2/3, 2/3), slot 3 (4/3, -4/3); se = sqrt(sum) / (n t_1)
    assert weights.std_error == pytest.approx(
        [0.0, np.sqrt(8 / 9) / 6, np.sqrt(32 / 9) / 6])
    # One member for both requests: its residuals cancel (clustered by member).
    same = examination_weights(frame.with_columns(member_id=pl.lit(10)))
    assert same.std_error == pytest.approx([0.0, 0.0, 0.0])


@pytest.mark.parametrize("change, message", [
    (dict(reward=pl.Series([1.0, 0, 0, 1, 0, 0])),
     r"decisions: column 'reward': no positive reward at slot\(s\) \[2, 3\]"),
    (dict(logging_marginal=pl.Series([0.5, 0.0, 0.5, 0.25, 0.5, 0.2])),
     r"decisions: column 'logging_marginal': 1 value\(s\) outside \(0, 1\] \(first: \[0.0\]"),
    (dict(position=pl.Series([1, 2, 2, 1, 2, 3])),
     r"decisions: column 'position': 1 request\(s\) without exactly the slots 1..3 "
     r"\(first: \[1\]"),
])
def test_bad_logs_are_refused_with_the_column(change, message):
    frame = _hand_frame().with_columns(**change)
    with pytest.raises(ValueError, match=message):
        examination_weights(frame)


def test_bad_exposure_inputs_are_refused():
    with pytest.raises(ValueError, match=r"logging_by_slot: expected shape \(2, 3, 3\)"):
        with_exposures(_hand_frame(), LOGGING_BY_SLOT[:1], BETA)
    with pytest.raises(ValueError, match=r"decisions: missing column\(s\) "
                                         r"\['target_marginal_by_slot'\]"):
        with_exposures(_hand_frame().drop("target_marginal_by_slot"), LOGGING_BY_SLOT, BETA)


# --- a simulated position-based log: the truth is known ---------------------------------------

DECAY, N_CAND, N_SLOTS = 0.7, 8, 5
LOGGING = slates.plackett_luce(1.0, 0.1)  # the world's logging policy: temperature 1, 10% explore


def _pbm_log(n_req: int, seed: int):
    """Requests with N_CAND candidates; the logging policy's slates; clicks with probability
    beta_k theta_a, beta_k = k ** -DECAY (the world's click model). Returns (impressions,
    candidates with logging_score, theta and the target's score, the true beta)."""
    rng = np.random.default_rng(seed)
    theta = rng.uniform(0.05, 0.6, (n_req, N_CAND))
    logging_score = rng.standard_normal((n_req, N_CAND))
    shown, cond = slates.sample_slates(LOGGING, logging_score, N_SLOTS, rng)
    beta = np.arange(1, N_SLOTS + 1) ** -DECAY
    click = rng.random(shown.shape) < beta * np.take_along_axis(theta, shown, axis=1)
    req = np.arange(n_req)
    target_score = np.log(theta) + 0.5 * rng.standard_normal(theta.shape)  # a noisy view of theta
    cands = pl.DataFrame({"request_id": np.repeat(req, N_CAND),
                          "post_id": np.tile(np.arange(N_CAND), n_req),
                          "logging_score": logging_score.ravel(), "theta": theta.ravel(),
                          "score": target_score.ravel()})
    impressions = pl.DataFrame({
        "request_id": np.repeat(req, N_SLOTS), "member_id": np.repeat(req // 3, N_SLOTS),
        "post_id": shown.ravel(), "position": np.tile(np.arange(1, N_SLOTS + 1), n_req),
        "propensity": cond.ravel(), "click": click.ravel().astype(np.float64)})
    return impressions, cands, beta


@pytest.fixture(scope="module")
def pbm_log():
    """The log, its candidates, the target's scores and theta, the true beta, and the target's
    slate_decisions frame (a deterministic top-N_SLOTS by its scores)."""
    impressions, cands, beta = _pbm_log(6000, seed=5)
    candidates = cands.select("request_id", "post_id", "logging_score")
    frame = slate_decisions(impressions, candidates, LOGGING,
                            cands.select("request_id", "post_id", "score"), 0.0, N_SLOTS, seed=1)
    return impressions, candidates, cands, beta, frame


def test_examination_weights_recover_the_true_position_decay(pbm_log):
    *_, beta, frame = pbm_log
    weights = examination_weights(frame)
    z = (weights.beta - beta) / np.where(weights.std_error > 0, weights.std_error, 1)
    assert np.abs(z).max() < 4, (weights.beta, beta, weights.std_error)
    # Precise enough to tell the decay from no position effect at all.
    assert (np.abs(weights.beta[1:] - 1) > 4 * weights.std_error[1:]).all()


def test_pbm_is_unbiased_for_a_deterministic_target_and_keeps_more_of_the_log(pbm_log):
    impressions, candidates, cands, beta, frame = pbm_log
    requests = impressions.select("request_id").unique()
    frames, _ = add_exposures({"target": frame}, impressions, candidates, LOGGING, requests,
                              N_SLOTS, seed=1)
    est = evaluate(["pbm", "iips"], frames["target"], Bootstrap(200, seed=0))
    # The truth: sum over the target's slate of beta_k theta (its top N_SLOTS by score).
    scores = cands.select("request_id", "post_id", "score")
    top = slate_marginals(scores, 0.0, N_SLOTS).join(cands, on=["request_id", "post_id"])
    truth = float((top["prob"] * top["theta"] * beta[top["position"].to_numpy() - 1]).sum()
                  / requests.height)
    pbm, iips = est["pbm"][0], est["iips"][0]
    std_error = (pbm.ci_high - pbm.ci_low) / 3.92
    assert abs(pbm.value - truth) < 3 * std_error and std_error < 0.03 * truth, (pbm, truth)
    assert pbm.ci_low <= truth <= pbm.ci_high
    # iips is unbiased too (12 seeds of 3000 requests: mean error +0.9%, pbm -0.8%), on far
    # fewer rows: its weights are 0 wherever the target moved the logged post to another slot.
    ess = {n: e[0].diagnostics["effective_sample_size"] for n, e in est.items()}
    assert ess["pbm"] > 3 * ess["iips"], ess
    assert pbm.ci_high - pbm.ci_low < 0.6 * (iips.ci_high - iips.ci_low)


def test_frames_of_different_logs_are_refused(pbm_log):
    impressions, candidates, *_ = pbm_log
    small = impressions.filter(pl.col("request_id") < 50)
    req = small.select("request_id").unique()
    scores = candidates.filter(pl.col("request_id") < 50).rename({"logging_score": "score"})
    frame = slate_decisions(small, candidates, LOGGING, scores, 0.0, N_SLOTS)
    other = frame.with_columns(reward=1.0 - pl.col("reward"))
    with pytest.raises(ValueError, match=r"treatment decisions: columns \['request_id', "
                                         r"'position', 'reward', 'logging_marginal'\] differ"):
        add_exposures({"control": frame, "treatment": other}, small, candidates, LOGGING, req,
                      N_SLOTS)


# --- the validity table carries each row's effective sample size --------------------------------


def test_validity_rows_and_summary_carry_the_effective_sample_size():
    def estimate(ess):
        return {"diagnostics": {"effective_sample_size": ess}}

    report = {"truth": {"lift": 0.1, "online_ab": {"lift": 0.12, "ci_low": 0.0, "ci_high": 0.2}},
              "lifts": [{"estimator": "pbm", "scope": "slate", "lift": 0.2, "ci_low": 0.1,
                         "ci_high": 0.3, "true_lift": 0.15, "status": "ok",
                         "control": estimate(900.0), "treatment": estimate(300.0)}]}
    rows = run_rows(report, "deterministic", 0) + run_rows(report, "deterministic", 1)
    assert [r["ess"] for r in rows] == [None, 300.0, None, 300.0]  # the smaller of the two
    table = summarize(pl.DataFrame(rows))
    assert table.filter(pl.col("estimator") == "pbm")["ess"].to_list() == [300.0]
