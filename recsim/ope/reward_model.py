"""A reward model fitted for the purpose, for DM / DR / SNDR, with its own error in the interval.

With `sim.reward_model: treatment` the model-based estimators judge the treatment by the ranker
it maximises: the posts it puts first are those its model over-rates (an optimiser's curse),
and DM's interval holds that model fixed. This module gives them a model of neither policy:

    1. Features          point-in-time features of a row (request_id, member_id, post_id,
                         position, timestamp) from one events log (the training period's):
                         position, post age, topic; smoothed engagement rates and log counts of
                         the member, member x topic, author and post from events strictly
                         before the row (ranker.retrieval.history.PointInTimeEvents); the
                         topic's share of the member's earlier impressions; the member's
                         connections, activity and tenure. No embedding, id table or ranker
                         score: nothing a compared ranker learns or ranks by.
    2. fit_reward_model  HistGradientBoostingClassifier on every slot of the training log,
                         label = the metric's engagement event; and `n_refits` refits with
                         Poisson(1) member-bootstrap resamples (the model's sampling error).
    3. cross_fit         K member folds: each row predicted by a model that never saw its
                         member. Not needed when the model trains on the training period and
                         predicts the evaluation period (the run); needed when a team has ONE
                         log period: a model predicting its own training rows has fitted their
                         labels, so DR's correction r - q shrinks and DM looks better than it is.
    4. model_based_lifts DM / DR / SNDR and their paired lifts with the estimators' own terms
                         (recsim.ope.estimators, the one home); only reward_hat /
                         target_reward_hat come from the model; intervals include its refits.
    5. check_independent / reward_model_status: refuse a compared ranker as the reward model;
                         the report's line on the configured one.

Shapes: N rows, F features (len(FEATURES)), R refits, B bootstrap replicates.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace

import numpy as np
import polars as pl

from ranker.retrieval.history import PointInTimeEvents
from recsim.ope import ab, estimators, policies
from recsim.ope.bootstrap import percentile_interval, poisson_counts
from recsim.ope.config import REWARD_MODELS, ROLES
from recsim.world import rewards
from recsim.world.schema import lookup_sorted
from recsim.world.timeline import hours_since_start

log = logging.getLogger(__name__)

FEATURES = ("position", "post_age_hours", "topic", "member_rate", "member_log_n",
            "member_topic_rate", "member_topic_log_n", "author_rate", "author_log_n",
            "post_rate", "post_log_n", "member_topic_share", "log_connections",
            "activity_level", "tenure_days")
TOPIC = FEATURES.index("topic")  # the one categorical feature
MODEL_BASED = ("dm", "dr", "sndr")
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # member_folds' multiplicative hash
REFIT_SEED = 0x5EED  # added to the seed: refit counts independent of the evaluation bootstrap's


@dataclass(frozen=True)
class RewardModelConfig:
    n_refits: int = 20  # member-bootstrap refits for the interval; 0: none (error not included)
    n_folds: int = 5  # cross_fit's member folds
    max_iter: int = 200  # boosting rounds (no early stopping: deterministic, no held-out split)
    learning_rate: float = 0.05
    max_leaf_nodes: int = 7  # small trees: on the tests' worlds 15 leaves overfit (AUC -0.005)
    min_samples_leaf: int = 40
    l2_regularization: float = 1.0
    prior_strength: float = 20.0  # pseudo-impressions at the log's rate that smooth a rate
    n_threads: int = 1  # OpenMP threads: more gain nothing here; on busy shared cores 10-40x slower


def _label(metric: str) -> pl.Expr:
    """The metric's engagement event (rewards.engagement_event): its own action, else the click
    (for weighted / dwell q is then the click's probability, as a ranker's click head is:
    SimConfig refuses DM / DR / SNDR for metrics other than click)."""
    return rewards.observed(rewards.engagement_event(metric))


class _Counts:
    """Point-in-time (impressions, engagements) of each key from events (key, t, y)."""

    def __init__(self, keys: np.ndarray, t: np.ndarray, y: np.ndarray):
        self.events = PointInTimeEvents(keys, t)
        self.cum = np.concatenate([[0.0], np.cumsum(y[self.events.order])])  # [E + 1]

    def before(self, keys: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[N] impressions and [N] engagements of each key strictly before t."""
        start, end = self.events.before(keys, t)
        return (end - start).astype(np.float64), self.cum[end] - self.cum[start]


class Features:
    """Step 1: the [N, F] feature matrix of rows, from the events of one log (point in time)."""

    def __init__(self, events: pl.DataFrame, posts: pl.DataFrame, members: pl.DataFrame,
                 label: pl.Expr, prior_strength: float = 20.0):
        """events: impressions (member_id, post_id, timestamp, outcome columns); label: the 0/1
        engagement as an expression over them; posts / members: the world's tables."""
        p = posts.select("post_id", "author_id", "topic", t=hours_since_start(pl.col("created_at"))
                         ).sort("post_id")
        self.topics = sorted(p["topic"].unique().to_list())
        self.post_ids, self.post_author = p["post_id"].to_numpy(), p["author_id"].to_numpy()
        self.post_topic = p["topic"].replace_strict({k: i for i, k in enumerate(self.topics)},
                                                    return_dtype=pl.Int64).to_numpy()
        self.post_created = p["t"].to_numpy()
        m = members.sort("member_id")
        self.member_ids = m["member_id"].to_numpy()
        self.member_numeric = np.column_stack([np.log1p(m["connections"].to_numpy()),
                                               m["activity_level"].to_numpy(),
                                               m["tenure_days"].to_numpy()]).astype(np.float64)
        ev = events.select("member_id", "post_id", t=hours_since_start(pl.col("timestamp")),
                           y=label.cast(pl.Float64))
        y, t = ev["y"].to_numpy(), ev["t"].to_numpy()
        self.prior_strength = prior_strength
        self.log_rate = _Counts(np.zeros(len(t), dtype=np.int64), t, y)  # the prior, in time too
        self.counts = {name: _Counts(k, t, y) for name, k in
                       self._keys(ev["member_id"].to_numpy(), ev["post_id"].to_numpy()).items()}

    def _keys(self, member_id: np.ndarray, post_id: np.ndarray) -> dict[str, np.ndarray]:
        p = lookup_sorted(self.post_ids, post_id, "post_id")
        topic = member_id * len(self.topics) + self.post_topic[p]
        return {"member": member_id, "member_topic": topic,
                "author": self.post_author[p], "post": post_id}

    def matrix(self, rows: pl.DataFrame) -> np.ndarray:
        """rows (member_id, post_id, position, timestamp) -> [N, F] float64 (FEATURES' order)."""
        member_id, post_id = rows["member_id"].to_numpy(), rows["post_id"].to_numpy()
        t = rows.select(hours_since_start(pl.col("timestamp"))).to_series().to_numpy()
        p = lookup_sorted(self.post_ids, post_id, "post_id")
        cols = [rows["position"].to_numpy().astype(np.float64), t - self.post_created[p],
                self.post_topic[p].astype(np.float64)]
        n, k = self.log_rate.before(np.zeros(len(t), dtype=np.int64), t)
        prior, s = (k + 0.5) / (n + 1.0), self.prior_strength  # the log's rate before t
        seen = {}
        for name, key in self._keys(member_id, post_id).items():
            seen[name], k = self.counts[name].before(key, t)
            cols += [(k + s * prior) / (seen[name] + s), np.log1p(seen[name])]
        share = (seen["member_topic"] + 1) / (seen["member"] + len(self.topics))
        m = lookup_sorted(self.member_ids, member_id, "member_id")
        return np.column_stack(cols + [share[:, None], self.member_numeric[m]])


@dataclass
class RewardModel:
    """A fitted reward model: q(row) = P(engagement | features of the row)."""

    features: Features
    estimator: object  # a fitted sklearn HistGradientBoostingClassifier
    metric: str
    n_threads: int
    train_members: np.ndarray  # [G] sorted members whose rows had weight in the fit
    refits: tuple["RewardModel", ...] = ()  # member-bootstrap refits (step 2)
    name: str = "fitted"

    def predict(self, rows: pl.DataFrame) -> np.ndarray:
        """rows (request_id, member_id, post_id, position, timestamp) -> [N] q in [0, 1]."""
        from threadpoolctl import threadpool_limits

        if rows.height == 0:
            return np.zeros(0)
        with threadpool_limits(self.n_threads):
            return self.estimator.predict_proba(self.features.matrix(rows))[:, 1]

    def score(self, rows: pl.DataFrame):
        """The ranker.train.Scores contract (recsim.ope.funnel.score_rows): click_prob = q."""
        from ranker.train import Scores

        q = self.predict(rows)
        return Scores(score=np.log(np.clip(q, 1e-12, None)), click_prob=q)


def _fit(x: np.ndarray, y: np.ndarray, seed: int, cfg: RewardModelConfig):
    from sklearn.ensemble import HistGradientBoostingClassifier
    from threadpoolctl import threadpool_limits

    model = HistGradientBoostingClassifier(
        learning_rate=cfg.learning_rate, max_iter=cfg.max_iter, max_leaf_nodes=cfg.max_leaf_nodes,
        min_samples_leaf=cfg.min_samples_leaf, l2_regularization=cfg.l2_regularization,
        categorical_features=[TOPIC], early_stopping=False, random_state=seed)
    with threadpool_limits(cfg.n_threads):
        return model.fit(x, y)


def _training_set(impressions: pl.DataFrame, posts: pl.DataFrame, members: pl.DataFrame,
                  metric: str, cfg: RewardModelConfig):
    label = _label(metric)
    features = Features(impressions, posts, members, label, cfg.prior_strength)
    y = impressions.select(label).to_series().to_numpy().astype(np.int64)
    if len(np.unique(y)) < 2:
        raise ValueError(f"reward model: the log has {'no' if not y.any() else 'only'} "
                         f"{metric} events; a classifier needs both outcomes")
    return features, features.matrix(impressions), y, impressions["member_id"].to_numpy()


def _resampled(x: np.ndarray, y: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row repeated by its member's Poisson count: the bootstrap as rows, not as sample
    weights. The same gradient sums; but sklearn bins weighted data with a weighted percentile
    per feature (3 of 4 of the refits' time on the validity world), unweighted data fast."""
    idx = np.repeat(np.arange(len(y)), counts)
    return x[idx], y[idx]


def fit_reward_model(train_impressions: pl.DataFrame, posts: pl.DataFrame,
                     members: pl.DataFrame, metric: str = "click", seed: int = 0,
                     cfg: RewardModelConfig | None = None) -> RewardModel:
    """Step 2: the model on every slot of `train_impressions`, and cfg.n_refits refits.

    Why boosted trees, not a logistic regression: a click is examination(position) x
    sigmoid(relevance), a product a linear logit cannot express, and relevance is non-linear
    in the rates; the trees take the topic as a category and the refits' repeated rows, and
    fit 10^5 rows in seconds. Seeded (random_state); without early stopping or subsampling
    the fit is deterministic anyway. Refit r repeats each member's rows by the member's
    Poisson(1) count r (bootstrap.poisson_counts, seed + REFIT_SEED); the features stay the
    whole log's (the refits carry the model's fitting error, not the rates' noise).
    """
    cfg = cfg or RewardModelConfig()
    start = time.perf_counter()
    features, x, y, member = _training_set(train_impressions, posts, members, metric, cfg)
    uniq, inverse = np.unique(member, return_inverse=True)
    base = RewardModel(features, _fit(x, y, seed, cfg), metric, cfg.n_threads, uniq)
    counts = poisson_counts(uniq, cfg.n_refits, seed + REFIT_SEED) if cfg.n_refits else None
    base.refits = tuple(
        RewardModel(features, _fit(*_resampled(x, y, counts[inverse, r]), seed + 1 + r, cfg),
                    metric, cfg.n_threads, uniq[counts[:, r] > 0], name=f"fitted refit {r}")
        for r in range(cfg.n_refits))
    log.info("reward model: %d rows, %d members, %d refits in %.1f s", len(y), len(uniq),
             cfg.n_refits, time.perf_counter() - start)
    return base


def member_folds(member_ids: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """[N] fold of each member in 0..K-1: a hash of (seed, member), so any member has one."""
    with np.errstate(over="ignore"):
        h = (np.asarray(member_ids).astype(np.uint64) + np.uint64(seed)) * _GOLDEN
        h ^= h >> np.uint64(29)
    return (h % np.uint64(n_folds)).astype(np.int64)


@dataclass
class CrossFitted:
    """Step 3: K fold models; a row is predicted by the model of its member's fold, which was
    trained on every other fold's members only."""

    models: tuple[RewardModel, ...]  # [K]
    seed: int
    metric: str
    refits: tuple = ()  # none: the cross-fitted model's own error is not in the interval
    name: str = "fitted (cross-fitted)"

    def fold(self, member_ids: np.ndarray) -> np.ndarray:
        return member_folds(member_ids, len(self.models), self.seed)

    def predict(self, rows: pl.DataFrame) -> np.ndarray:
        """rows (request_id, member_id, post_id, position, timestamp) -> [N] q in [0, 1]."""
        fold, q = self.fold(rows["member_id"].to_numpy()), np.zeros(rows.height)
        for k, model in enumerate(self.models):
            mask = fold == k
            if mask.any():
                q[mask] = model.predict(rows.filter(pl.Series(mask)))
        return q


def cross_fit(impressions: pl.DataFrame, posts: pl.DataFrame, members: pl.DataFrame,
              metric: str = "click", seed: int = 0,
              cfg: RewardModelConfig | None = None) -> CrossFitted:
    """K = cfg.n_folds models, model k fitted on the rows of the members outside fold k (the
    features: every event of `impressions`, point in time). Use it when the rows to predict are
    the rows it trains on (one log period); `.predict(impressions)` then never uses a model that
    saw the row's member."""
    cfg = cfg or RewardModelConfig()
    if cfg.n_folds < 2:
        raise ValueError(f"cross_fit: n_folds must be >= 2, got {cfg.n_folds}")
    features, x, y, member = _training_set(impressions, posts, members, metric, cfg)
    fold = member_folds(member, cfg.n_folds, seed)
    models = tuple(RewardModel(features, _fit(x[fold != k], y[fold != k], seed + k, cfg),
                               metric, cfg.n_threads, np.unique(member[fold != k]),
                               name=f"fold {k}")
                   for k in range(cfg.n_folds))
    return CrossFitted(models, seed, metric)


def _predictions(model, decisions: pl.DataFrame, action_probs: Iterable[pl.DataFrame],
                 position: int) -> pl.DataFrame:
    """(request_id, post_id, q) for the logged posts and every post either policy may pick."""
    pairs = pl.concat([decisions.select("request_id", "post_id")]
                      + [a.filter(pl.col("prob") > 0).select("request_id", "post_id")
                         for a in action_probs]).unique(maintain_order=True)
    rows = pairs.join(decisions.select("request_id", "member_id", "timestamp").unique("request_id"),
                      on="request_id", maintain_order="left").with_columns(
        position=pl.lit(position, dtype=pl.Int32))
    return rows.select("request_id", "post_id", q=pl.Series(model.predict(rows), dtype=pl.Float64))


def _framed(decisions: pl.DataFrame, action_probs: pl.DataFrame, q: pl.DataFrame) -> pl.DataFrame:
    bare = decisions.drop("reward_hat", "target_reward_hat", strict=False)
    return policies.with_reward_model(bare, action_probs, q)


def _values(model, decisions: dict, probs: dict, names, position: int) -> dict[str, dict]:
    """Point values {role: {name: value}} of the model-based estimators under `model`."""
    q = _predictions(model, decisions["control"], probs.values(), position)
    return {role: {n: e.value for n, (e, _) in estimators.evaluate(list(names), _framed(
        decisions[role], probs[role], q), estimators.Bootstrap(1, 0)).items()} for role in ROLES}


def model_based_lifts(decisions_c: pl.DataFrame, decisions_t: pl.DataFrame,
                      action_probs_c: pl.DataFrame, action_probs_t: pl.DataFrame, model,
                      boot: estimators.Bootstrap, alpha: float | None = None,
                      names: Iterable[str] = MODEL_BASED, position: int = 1,
                      compared: Iterable = ()) -> dict[str, ab.Lift]:
    """Step 4: DM / DR / SNDR of both policies and the paired lifts, with `model`'s predictions.

    Args:
        decisions_c, decisions_t: the same logged decisions [N rows] (request_id, member_id,
            timestamp, post_id, propensity, reward) each with its policy's target_prob
            (policies.with_target); any reward_hat / target_reward_hat there is replaced.
        action_probs_c, action_probs_t: (request_id, post_id, prob) each policy's distribution
            over the slot (policies.top_slot_probabilities); q is predicted at `position`.
        model: anything with .predict(rows) -> [N] q: a RewardModel (with its refits), a
            CrossFitted, or e.g. the user model's truth in a test; `compared`: the compared
            rankers or scorers, which `model` must not be (check_independent).
    Returns:
        name -> ab.Lift; both Estimates' diagnostics say "reward_model_error":
        "included (R refits)" or "not included" (and the refits' standard deviations).

    The interval (refit-per-replicate): the evaluation bootstrap's B replicates of a value (a
    policy's, or the lift) are stretched about the point by sqrt(1 + V_refit / V_eval), V_refit
    the variance of the R refits' values on the whole evaluation log: the variance is exactly
    V_eval + V_refit, the shape the bootstrap's, and the interval never narrower than the
    evaluation-only one. (Nesting, all B x R sums v_b + (v_r - mean v), came out narrower by
    discreteness where the refit spread is tiny, as for DR; 20 points say little of a shape.)
    Refit r's lift uses one model for both policies, so their common model error cancels in
    the lift. Chosen over a cross-fitting sandwich: every interval here is a member bootstrap
    (recsim.ope.bootstrap), boosted trees have no smooth score for a sandwich, and R small
    refits take seconds. Assumes the two periods' noise independent (different impressions;
    the covariance through shared members is neglected); R = 20 gets V_refit within about
    +-30 %. The refits carry the model's variance, not its bias: an attenuated model stays so.
    """
    check_independent(model, compared)
    alpha = boot.alpha if alpha is None else alpha
    names = list(names)
    decisions = {"control": decisions_c, "treatment": decisions_t}
    probs = {"control": action_probs_c, "treatment": action_probs_t}
    if not decisions_c["request_id"].equals(decisions_t["request_id"]):
        raise ValueError("model_based_lifts: control and treatment must be evaluated on the same "
                         "logged decisions, in the same order")
    q = _predictions(model, decisions_c, probs.values(), position)
    ev = {role: estimators.evaluate(names, _framed(decisions[role], probs[role], q), boot, alpha,
                                    source=f"{role} decisions") for role in ROLES}
    refits = tuple(getattr(model, "refits", ()))
    vals = [_values(r, decisions, probs, names, position) for r in refits]
    flag = f"included ({len(refits)} refits)" if refits else "not included"
    return {n: _combined(n, ev, {role: np.array([v[role][n] for v in vals]) for role in ROLES},
                         alpha, flag, getattr(model, "name", type(model).__name__))
            for n in names}


def _stretch(point: float, boot_values: np.ndarray, refit_values: np.ndarray) -> np.ndarray:
    """[B] the replicates stretched about the point by sqrt(1 + V_refit / V_eval): variance
    V_eval + V_refit (ddof 1), the evaluation bootstrap's shape. Fewer than 2 refits: as given."""
    reps, refits = boot_values[np.isfinite(boot_values)], refit_values[np.isfinite(refit_values)]
    if refits.size < 2 or reps.size < 2 or not reps.var(ddof=1) > 0:
        return boot_values
    return point + np.sqrt(1 + refits.var(ddof=1) / reps.var(ddof=1)) * (boot_values - point)


def _combined(name: str, ev: dict, refit_values: dict[str, np.ndarray], alpha: float, flag: str,
              model_name: str) -> ab.Lift:
    """The Lift of `name` from the evaluation replicates [B] and the refit values [R] of each
    policy (R may be 0: the evaluation replicates alone). Each policy's interval stretches its
    value's replicates; the lift's, the lift's (refit r's lift: one model for both policies)."""
    (c, c_boot), (t, t_boot) = ev["control"][name], ev["treatment"][name]
    with np.errstate(divide="ignore", invalid="ignore"):
        refit_lifts = refit_values["treatment"] / refit_values["control"] - 1  # [R]
        boot_lifts = t_boot / c_boot - 1  # [B]
        lift = float(np.float64(t.value) / c.value - 1)
    ests = {}
    for role, est, boot_values in (("control", c, c_boot), ("treatment", t, t_boot)):
        values = refit_values[role]
        lo, hi = percentile_interval(_stretch(est.value, boot_values, values), alpha)
        diag = {**est.diagnostics, "reward_model": model_name, "reward_model_error": flag,
                "refit_std": float(np.std(values, ddof=1)) if values.size > 1 else 0.0,
                "lift_refit_std": float(np.std(refit_lifts, ddof=1)) if values.size > 1 else 0.0}
        ests[role] = replace(est, ci_low=lo, ci_high=hi, diagnostics=diag)
    # ab.lift_from_replicates (the one home of a lift's interval, p-value and MDE) reads the
    # lift replicates as t / c - 1: hand it c and c * (1 + lift) for each stretched lift.
    with np.errstate(invalid="ignore"):
        treatment = c_boot * (1 + _stretch(lift, boot_lifts, refit_lifts))
    return ab.lift_from_replicates(name, ests["control"], ests["treatment"], c_boot, treatment,
                                   alpha)


def check_independent(reward_model, compared: Iterable = ()) -> None:
    """Step 5: ValueError when the reward model is one of the compared rankers: a role name
    ("control", "treatment"), or an object that is (or whose bound scorer belongs to) one of
    `compared`. DM / DR / SNDR with it would judge a policy by the model it maximises."""
    if isinstance(reward_model, str):
        if reward_model in ROLES:
            raise ValueError(f"sim.reward_model: {reward_model!r} is a compared ranker; DM / DR / "
                             "SNDR would judge the treatment by the model it maximises (an "
                             "optimiser's curse); use 'fitted'")
        if reward_model not in REWARD_MODELS:
            raise ValueError(f"sim.reward_model: must be one of {list(REWARD_MODELS)}, got "
                             f"{reward_model!r}")
        return
    owner = getattr(reward_model, "__self__", reward_model)  # a bound scorer -> its ranker
    if any(owner is getattr(c, "__self__", c) for c in compared):
        raise ValueError("reward model: it is one of the compared rankers; DM / DR / SNDR need a "
                         "model fitted for the purpose (recsim.ope.reward_model.fit_reward_model)")


def reward_model_status(name: str) -> str:
    """The report's line on the configured reward model: a warning for a compared ranker."""
    if name == "fitted":
        return ("reward model: fitted for the purpose on the training period, independent of "
                "both rankers (recsim.ope.reward_model)")
    if name in ROLES:
        return (f"WARNING: DM / DR / SNDR use the {name}'s own ranker as the reward model: the "
                "treatment is judged by the model it maximises (an optimiser's curse), and their "
                "intervals hold that model fixed; set sim.reward_model=fitted")
    raise ValueError(f"sim.reward_model: must be one of {list(REWARD_MODELS)}, got {name!r}")
