"""The reward model fitted for the purpose (recsim/ope/reward_model.py) on the small world."""

from dataclasses import replace

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import roc_auc_score

from recsim.ope import ab, policies
from recsim.ope.config import SimConfig
from recsim.ope.estimators import Bootstrap
from recsim.ope.reward_model import (FEATURES, Features, RewardModelConfig, check_independent,
                                     cross_fit, fit_reward_model, model_based_lifts,
                                     reward_model_status)
from recsim.world import rewards
from recsim.world.timeline import hours_since_start, time_split, to_timestamps

N_REFITS = 5  # the tests' refits (the default is 20)


@pytest.fixture(scope="module")
def split(small_world):
    return time_split(small_world.impressions, 0.5)


@pytest.fixture(scope="module")
def model(small_world, split):
    return fit_reward_model(split.train, small_world.posts, small_world.members, "click", seed=0,
                            cfg=RewardModelConfig(n_refits=N_REFITS))


class Truth:
    """The user model's expected click as a reward model (a perfect one)."""

    name = "truth"

    def __init__(self, world):
        self.world = world

    def predict(self, rows: pl.DataFrame) -> np.ndarray:
        return self.world.truth.expected_outcomes(rows)["p_click"].to_numpy()


@pytest.fixture(scope="module")
def ab_frames(small_world, split):
    """Evaluation decisions and two noisy-oracle policies over the logged candidates:
    control "popular and fresh", treatment the user model's relevance + N(0, 1) noise."""
    world, truth = small_world, small_world.truth
    decisions = policies.logged_top_slot(split.test, rewards.observed("click"))
    cands = world.candidates.join(decisions.select("request_id", "member_id", "timestamp"),
                                  on="request_id")
    m = truth.member_index(cands["member_id"].to_numpy())
    p = truth.post_index(cands["post_id"].to_numpy())
    t = cands.select(hours_since_start(pl.col("timestamp"))).to_series().to_numpy()
    popularity = world.authors["popularity"].to_numpy()[truth.post_author[p]]
    age = np.maximum(t - truth.post_created[p], 0)
    fresh = 0.5 ** (age / world.config.freshness_halflife_hours)
    noise = np.random.default_rng(0).standard_normal(len(t))
    scores = {"control": np.log(popularity) + fresh,
              "treatment": truth.relevance_logit(m, p, t) + noise}
    probs = {role: policies.top_slot_probabilities(cands.select("request_id", "post_id", score=s),
                                                   temperature=1.0)
             for role, s in scores.items()}
    frames = {role: policies.with_target(decisions, probs[role]) for role in probs}
    return decisions, frames, probs


def _lifts(ab_frames, reward_model, **kw):
    _, frames, probs = ab_frames
    return model_based_lifts(frames["control"], frames["treatment"], probs["control"],
                             probs["treatment"], reward_model, Bootstrap(200, 0), **kw)


def test_fitted_model_ranks_and_is_calibrated_on_the_evaluation_period(small_world, split, model):
    q = model.predict(split.test)
    y = split.test["click"].to_numpy()
    true_p = small_world.truth.expected_outcomes(split.test)["p_click"].to_numpy()
    auc = roc_auc_score(y, q)
    assert 0.65 < auc <= roc_auc_score(y, true_p) + 0.01  # clearly above 0.5, below the truth
    assert np.corrcoef(q, true_p)[0, 1] > 0.6
    assert q.mean() == pytest.approx(true_p.mean(), rel=0.1)
    quintile = np.digitize(q, np.quantile(q, [0.2, 0.4, 0.6, 0.8]))
    for k in range(5):  # calibrated against the true click probabilities, roughly
        assert abs(q[quintile == k].mean() - true_p[quintile == k].mean()) < 0.02


def test_features_are_point_in_time(small_world):
    """An event at or after a row's time never changes the row's features; before, it does."""
    posts = small_world.posts.filter(pl.col("topic") == small_world.posts["topic"][0]).head(2)
    member = int(small_world.members["member_id"][0])
    past = pl.DataFrame({"member_id": [member, member], "post_id": posts["post_id"],
                         "timestamp": to_timestamps(np.array([10.0, 20.0])),
                         "click": [True, False]})
    future = pl.DataFrame({"member_id": [member], "post_id": posts["post_id"][:1],
                           "timestamp": to_timestamps(np.array([30.0])), "click": [True]})
    label = pl.col("click").cast(pl.Float64)
    now = Features(past, small_world.posts, small_world.members, label)
    later = Features(pl.concat([past, future]), small_world.posts, small_world.members, label)
    hours = np.array([5.0, 10.0, 20.0, 30.0, 30.0 + 1e-6, 40.0])
    rows = pl.DataFrame({"member_id": [member] * 6, "post_id": [posts["post_id"][0]] * 6,
                         "position": [1] * 6, "timestamp": to_timestamps(hours)})
    x_now, x_later = now.matrix(rows), later.matrix(rows)
    assert x_now.shape == (6, len(FEATURES))
    np.testing.assert_array_equal(x_now[:4], x_later[:4])  # up to and at 30 h: unseen
    assert (x_now[4:] != x_later[4:]).any(axis=1).all()  # strictly after: seen
    n = x_now[:, FEATURES.index("member_topic_log_n")]
    np.testing.assert_allclose(np.expm1(n), [0, 0, 1, 2, 2, 2])  # the 10 h event: after 10 h


def test_cross_fit_never_predicts_a_row_with_a_model_that_saw_its_member(small_world, split, model):
    cf = cross_fit(split.train, small_world.posts, small_world.members, "click", seed=3,
                   cfg=RewardModelConfig(n_folds=3, n_refits=0))
    members = split.train["member_id"].to_numpy()
    fold = cf.fold(members)
    assert set(np.unique(fold)) == {0, 1, 2}
    for k, fold_model in enumerate(cf.models):
        assert not np.isin(members[fold == k], fold_model.train_members).any()
        assert np.isin(members[fold != k], fold_model.train_members).all()
    q = cf.predict(split.train)
    rows = split.train.with_row_index("i").filter(pl.Series(fold == 1)).head(50)
    np.testing.assert_allclose(q[rows["i"].to_numpy()], cf.models[1].predict(rows.drop("i")))
    # Why it matters on one log period: in-sample predictions have fitted the labels.
    y = split.train["click"].to_numpy()
    assert roc_auc_score(y, model.predict(split.train)) > roc_auc_score(y, q) + 0.05


def test_dm_with_a_perfect_reward_model_is_the_true_top_slot_value(small_world, ab_frames):
    decisions, _, probs = ab_frames
    lifts = _lifts(ab_frames, Truth(small_world), names=["dm", "dr"])
    requests = decisions.select("request_id", "member_id", "timestamp")
    for role in ("control", "treatment"):
        true = ab.true_value(small_world.truth, probs[role], requests)
        dm = getattr(lifts["dm"], role)
        assert dm.value == pytest.approx(true, rel=1e-9)
        assert dm.ci_low <= true <= dm.ci_high
        assert dm.diagnostics["reward_model_error"] == "not included"


def test_refits_widen_the_interval_by_the_models_own_error(model, ab_frames):
    with_error = _lifts(ab_frames, model)
    fixed = _lifts(ab_frames, replace(model, refits=()))
    assert len(model.refits) == N_REFITS
    for name in ("dm", "dr", "sndr"):
        lift, base = with_error[name], fixed[name]
        assert lift.lift == base.lift  # the point is the model's; the refits only add error
        for role in ("control", "treatment"):
            diag = getattr(lift, role).diagnostics
            assert diag["reward_model_error"] == f"included ({N_REFITS} refits)"
            assert diag["refit_std"] > 0 and diag["lift_refit_std"] > 0
            assert getattr(base, role).diagnostics["reward_model_error"] == "not included"
            width = getattr(lift, role).ci_high - getattr(lift, role).ci_low
            assert width >= getattr(base, role).ci_high - getattr(base, role).ci_low
        assert lift.ci_high - lift.ci_low >= base.ci_high - base.ci_low
        refit_var = lift.control.diagnostics["lift_refit_std"] ** 2
        assert lift.std_error ** 2 == pytest.approx(base.std_error ** 2 + refit_var, rel=1e-9)
    # DM leans on the model alone: its refit error is a visible share of its interval.
    widths = [lifts["dm"].ci_high - lifts["dm"].ci_low for lifts in (with_error, fixed)]
    assert widths[0] > 1.02 * widths[1]


def test_a_compared_ranker_is_refused_as_the_reward_model(model, ab_frames):
    assert SimConfig().reward_model == "fitted"
    check_independent("fitted")
    assert "independent of both rankers" in reward_model_status("fitted")
    for role in ("control", "treatment"):
        assert SimConfig(reward_model=role).reward_model == role  # accepted, with a warning
        assert reward_model_status(role).startswith("WARNING")
        with pytest.raises(ValueError, match="is a compared ranker"):
            check_independent(role)
    with pytest.raises(ValueError, match="sim.reward_model: must be one of"):
        SimConfig(reward_model="logging")
    with pytest.raises(ValueError, match="one of the compared rankers"):
        check_independent(model.score, compared=[model])  # a ranker's bound scorer
    with pytest.raises(ValueError, match="one of the compared rankers"):
        _lifts(ab_frames, model, compared=[object(), model])


def test_the_label_is_the_metrics_engagement_event(small_world, split):
    cfg = RewardModelConfig(n_refits=0, max_iter=50)
    for metric, event in (("like", "like"), ("dwell", "click")):
        q = fit_reward_model(split.train, small_world.posts, small_world.members, metric,
                             cfg=cfg).predict(split.test)
        assert q.mean() == pytest.approx(split.test[event].mean(), rel=0.15)
    assert split.test["like"].mean() < 0.7 * split.test["click"].mean()  # the two differ


def test_a_refit_sees_each_row_as_often_as_its_members_poisson_count():
    from recsim.ope.reward_model import _resampled

    x = np.arange(8.0).reshape(4, 2)
    xr, yr = _resampled(x, np.array([0, 1, 0, 1]), np.array([0, 2, 1, 0]))
    assert xr.tolist() == [[2.0, 3.0], [2.0, 3.0], [4.0, 5.0]] and yr.tolist() == [1, 1, 0]
