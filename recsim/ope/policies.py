"""Policies as action distributions over a request's candidates, and the logged decisions they
are evaluated on.

The walking skeleton evaluates the *top slot* of the feed: per request, the logging policy's
first-slot propensity is exact and unconditional, so IPS / SNIPS on it are unbiased. (Deeper
slots need position-aware estimators: see recsim/estimators.py for what exists.) Whole slates,
their Plackett-Luce conditionals and marginals, have one home for the world's logging policy
and the evaluation policies alike: recsim.world.slates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

SOURCES = ("logged", "retrieval")  # a funnel policy's candidate sources
MEMBER_VECTORS = ("history", "dual_encoder")  # retrieval query vectors (recsim/ope/funnel.py)


@dataclass
class PolicyConfig:
    name: str = "ranker"
    features: list[str] = field(default_factory=lambda: ["ids", "context"])
    # Post encoder directory for this policy's embedding features; None: the run's `embeddings`.
    # A relative path is taken from the project root (e.g. ".cache/models/multitask").
    encoder_dir: str | None = None
    # Prefix the policy's encoder puts before every post text (e5 models: "passage: "); None: the
    # run's `embeddings.encoder.text_prefix`.
    text_prefix: str | None = None
    # The funnel (recsim/ope/funnel.py): where the candidates come from, how many, the slate.
    source: str = "logged"  # logged: the request's logged candidates | retrieval: FAISS top-K
    top_k: int = 100  # retrieval: candidates per request (the seed paper: 2,000)
    index: str | None = None  # retrieval: FAISS index type; None: the run's `retrieval.index`
    member_vectors: str = "history"  # retrieval: history (profile fallback) | dual_encoder
    exclude_seen: bool = False  # retrieval: drop posts the member was shown before the request
    temperature: float | None = None  # slate: 0 top-N by score, > 0 Plackett-Luce; None: sim's
    # The team's own model scores per (request_id, post_id) over the logged candidates (parquet
    # or CSV; recsim.world.logs.read_scores): the policy ranks by them instead of a ranker
    # trained here (its features and encoder are then unused). Relative to the start directory.
    scores: str | None = None
    # This policy's ranker trains with seed + ranker_seed_offset (0: the run's seed). An A/A
    # test, two policies alike but for this offset, measures how far the ranker's own training
    # noise moves the true lift: the floor under which no A/B of this funnel can see a change.
    ranker_seed_offset: int = 0

    def check(self, key: str) -> None:
        """ValueError naming `key` (where the policy sits: "sim.control", "sim.treatment") for
        an unusable policy: no name, unknown or unusable feature groups, an encoder directory
        that is not a complete model. SimConfig calls it for both of its policies."""
        from embeddings.config import check_model_dir
        from ranker.features import check_groups
        from ranker.retrieval.index import index_type
        from recsim.paths import project_path
        from recsim.world import checks

        if not self.name:
            raise ValueError(f"{key}.name: must not be empty (the report names policies by it)")
        try:
            check_groups(self.features)
        except ValueError as err:  # check_groups names the ranker's own key: name the policy's
            raise ValueError(f"{key}.features: " + str(err).removeprefix("ranker.features: ")) from None
        checks.one_of(f"{key}.source", self.source, SOURCES)
        checks.one_of(f"{key}.member_vectors", self.member_vectors, MEMBER_VECTORS)
        checks.at_least(f"{key}.top_k", self.top_k, 1)
        checks.at_least(f"{key}.temperature", self.temperature, 0, optional=True)
        if self.index is not None:
            try:
                index_type(self.index)
            except ValueError as err:
                raise ValueError(f"{key}.index: " + str(err).removeprefix("retrieval.index: ")) from None
        if self.scores is not None:
            if not Path(self.scores).exists():
                raise ValueError(f"{key}.scores: {self.scores} does not exist")
            if self.source != "logged":
                raise ValueError(f"{key}.scores: a score file scores the logged candidates, so "
                                 f"{key}.source must be logged, got {self.source!r}")
        if self.encoder_dir is not None:
            check_model_dir(project_path(self.encoder_dir), f"{key}.encoder_dir",
                            "train it first with `make finetune` (python -m recsim.jobs.finetune), "
                            "or for .cache/models/multilingual-e5-small run `make setup`")


@dataclass
class FileScores:
    """A score file's view of candidate rows, in the shape of ranker.train.Scores."""

    score: np.ndarray  # [N] the team's model score: what the policy ranks by
    click_prob: np.ndarray  # [N] NaN: a score file holds no click probability (no reward model)
    seconds: dict = field(default_factory=dict)


def score_file_scorer(scores: pl.DataFrame, source: str) -> Callable[[pl.DataFrame], FileScores]:
    """A scorer (rows -> scores, as a trained ranker's: recsim.ope.funnel.score_rows) that looks
    each (request_id, post_id) up in `scores` (request_id, post_id, score); a ValueError naming
    `source` (the file) when the file does not score a candidate of the policy."""
    def score(rows: pl.DataFrame) -> FileScores:
        found = rows.select("request_id", "post_id").join(
            scores.select("request_id", "post_id", "score"), on=["request_id", "post_id"],
            how="left", maintain_order="left")
        missing = found.filter(pl.col("score").is_null())
        if missing.height:
            raise ValueError(
                f"{source}: column 'score': {missing.height} of the policy's {rows.height} "
                f"candidates (request_id, post_id) have no score (first: "
                f"{missing.select('request_id', 'post_id').head(3).rows()})")
        return FileScores(found["score"].to_numpy(), np.full(rows.height, np.nan))
    return score


def candidates_from_scores(scores: dict[str, pl.DataFrame], sources: dict[str, str],
                           impressions: pl.DataFrame) -> pl.DataFrame:
    """Without a candidates file, the score files name each request's candidates: the pairs
    (request_id, post_id) the first file scores; every other file must score the same pairs, and
    every shown post must be among them (else a logged action lies outside the candidate set
    and no estimate is valid). `sources`: role -> the file, for the errors."""
    key = ["request_id", "post_id"]
    (first, frame), *others = scores.items()
    pairs = frame.select(key)
    for role, other in others:
        diff = other.select(key).join(pairs, on=key, how="anti").vstack(
            pairs.join(other.select(key), on=key, how="anti"))
        if diff.height:
            raise ValueError(f"{sources[role]}: columns (request_id, post_id): {diff.height} pairs "
                             f"differ from {sources[first]}'s (first: {diff.head(3).rows()}); "
                             "without data.candidates the score files name the candidates and "
                             "must agree")
    shown = impressions.select(key).join(pairs, on=key, how="anti")
    if shown.height:
        raise ValueError(f"{sources[first]}: columns (request_id, post_id): {shown.height} shown "
                         f"posts have no score (first: {shown.head(3).rows()}); without "
                         "data.candidates the score files name the candidates, shown posts "
                         "included")
    return pairs


def check_logging_form(impressions: pl.DataFrame, candidates: pl.DataFrame, temperature: float,
                       epsilon: float, tol: float = 1e-6) -> None:
    """The declared logging policy (Plackett-Luce at `temperature` with epsilon-uniform
    exploration over candidates.logging_score) must reproduce the logged top slots'
    propensities; a ValueError naming data.logging_temperature when it does not."""
    scored = candidates.select("request_id", "post_id", score="logging_score")
    probs = top_slot_probabilities(scored, temperature).with_columns(
        prob=(1 - epsilon) * pl.col("prob") + epsilon / pl.len().over("request_id"))
    top = impressions.filter(pl.col("position") == 1).join(
        probs, on=["request_id", "post_id"], how="left")
    bad = top.filter((pl.col("prob") - pl.col("propensity")).abs() > tol)
    if bad.height:
        worst = float((bad["prob"] - bad["propensity"]).abs().max())
        raise ValueError(
            f"data.logging_temperature: Plackett-Luce at temperature {temperature} with epsilon "
            f"{epsilon} over the candidates' logging_score gives top-slot probabilities that "
            f"differ from impressions.propensity in {bad.height} of {top.height} requests (by up "
            f"to {worst:.3g}; first (request_id, propensity, declared): "
            f"{bad.select('request_id', 'propensity', 'prob').head(3).rows()})")


def top_slot_probabilities(scored: pl.DataFrame, temperature: float) -> pl.DataFrame:
    """(request_id, post_id, score) -> (request_id, post_id, prob) for the top slot.

    temperature 0: deterministic, the best-scored candidate (ties broken by post_id);
    temperature > 0: softmax(score / temperature) within each request.
    """
    if temperature < 0:
        raise ValueError(f"sim.policy_temperature must be >= 0, got {temperature}")
    if temperature == 0:
        best = (scored.sort(["request_id", "score", "post_id"], descending=[False, True, False])
                .group_by("request_id", maintain_order=True).first())
        return best.select("request_id", "post_id", prob=pl.lit(1.0))
    z = pl.col("score") / temperature
    return scored.with_columns(
        prob=(z - z.max().over("request_id")).exp()
    ).with_columns(prob=pl.col("prob") / pl.col("prob").sum().over("request_id")).select(
        "request_id", "post_id", "prob")


def logged_top_slot(impressions: pl.DataFrame, reward: str | pl.Expr = "click") -> pl.DataFrame:
    """The logged first-slot decisions: (request_id, member_id, timestamp, post_id, propensity, reward).

    `reward`: a column name or an expression (recsim.world.rewards.observed(metric)).
    """
    reward = pl.col(reward) if isinstance(reward, str) else reward
    return impressions.filter(pl.col("position") == 1).select(
        "request_id", "member_id", "timestamp", "post_id", "propensity",
        reward=reward.cast(pl.Float64))


def with_target(decisions: pl.DataFrame, action_probs: pl.DataFrame) -> pl.DataFrame:
    """Attach the evaluation policy's probability of each logged action (0 when it never picks it)."""
    return decisions.join(action_probs.rename({"prob": "target_prob"}),
                          on=["request_id", "post_id"], how="left",
                          maintain_order="left").with_columns(
        pl.col("target_prob").fill_null(0.0))


def with_reward_model(decisions: pl.DataFrame, action_probs: pl.DataFrame,
                      predictions: pl.DataFrame) -> pl.DataFrame:
    """Attach a reward model's prediction for the logged action (reward_hat) and its expectation
    under the evaluation policy (target_reward_hat = sum over posts of prob * q), for DM / DR.

    predictions: (request_id, post_id, q) over every candidate of each request.
    """
    expected = action_probs.join(predictions, on=["request_id", "post_id"], how="left").group_by(
        "request_id").agg(target_reward_hat=(pl.col("prob") * pl.col("q")).sum())
    return decisions.join(predictions.rename({"q": "reward_hat"}), on=["request_id", "post_id"],
                          how="left", maintain_order="left").join(
        expected, on="request_id", how="left", maintain_order="left")


def check_support(action_probs: pl.DataFrame, candidates: pl.DataFrame,
                  source: str = "evaluation policy") -> None:
    """Refuse an evaluation policy that puts mass on posts outside the log's candidate sets.

    Those posts were never available to the logging policy, so no logged row can speak for
    them: any estimate would silently ignore that mass.
    """
    outside = action_probs.filter(pl.col("prob") > 0).join(
        candidates.select("request_id", "post_id"), on=["request_id", "post_id"], how="anti")
    if outside.height:
        per_request = outside.group_by("request_id").agg(pl.col("prob").sum())
        raise ValueError(
            f"{source}: puts mass on {outside.height} (request, post) pairs outside the log's "
            f"candidate sets, in {per_request.height} request(s) (up to "
            f"{per_request['prob'].max():.3f} of a request's mass; first: "
            f"{outside.select('request_id', 'post_id').head(3).rows()}); "
            "off-policy estimates cannot see those posts")
