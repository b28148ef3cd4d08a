"""Policies as action distributions over a request's candidates, and the logged decisions they
are evaluated on.

The walking skeleton evaluates the *top slot* of the feed: per request, the logging policy's
first-slot propensity is exact and unconditional, so IPS / SNIPS on it are unbiased. (Deeper
slots need position-aware estimators: see recsim/estimators.py for what exists.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl


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

    def check(self, key: str) -> None:
        """ValueError naming `key` (where the policy sits: "sim.control", "sim.treatment") for
        an unusable policy: no name, unknown or unusable feature groups, an encoder directory
        that is not a complete model. SimConfig calls it for both of its policies."""
        from embeddings.config import check_model_dir
        from ranker.features import check_groups
        from recsim.paths import project_path

        if not self.name:
            raise ValueError(f"{key}.name: must not be empty (the report names policies by it)")
        try:
            check_groups(self.features)
        except ValueError as err:  # check_groups names the ranker's own key: name the policy's
            raise ValueError(f"{key}.features: " + str(err).removeprefix("ranker.features: ")) from None
        if self.encoder_dir is not None:
            check_model_dir(project_path(self.encoder_dir), f"{key}.encoder_dir",
                            "train it first with `make finetune` (python -m recsim.jobs.finetune), "
                            "or for .cache/models/multilingual-e5-small run `make setup`")


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


# --- slates: whole rankings over a request's candidates -------------------------------------
#
# A slate policy is bound to the scores of R requests, policy(scores [R, C]), and then gives,
# slot after slot, probabilities [R, C] over the still available candidates:
# policy(scores)(available [R, C]). Plackett-Luce with exploration covers both the world's
# logging policy (its temperature and epsilon) and a ranker's softmax or sorted policy.


def plackett_luce(temperature: float, epsilon: float = 0.0):
    """(1 - eps) softmax(scores / T) + eps uniform, over the available candidates at each slot.

    T = 0 is the sorted ranking (ties to the lower column). Same numbers as
    recsim.world.world.slot_probabilities, with the exponentials computed once, not once per slot.
    """
    def bind(scores: np.ndarray):
        rows = np.arange(len(scores))
        if temperature > 0:
            weights = np.exp((scores - scores.max(axis=1, keepdims=True)) / temperature)

        def slot(available: np.ndarray) -> np.ndarray:
            if temperature > 0:
                soft = weights * available
                soft /= soft.sum(axis=1, keepdims=True)
            else:
                soft = np.zeros(scores.shape)
                soft[rows, np.argmax(np.where(available, scores, -np.inf), axis=1)] = 1.0
            if epsilon == 0:
                return soft
            return (1.0 - epsilon) * soft + epsilon * available / available.sum(axis=1, keepdims=True)
        return slot
    return bind


def _sample(probs: np.ndarray, available: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One column per row, drawn from `probs` (rows need not sum to 1), never an unavailable one."""
    cum = np.cumsum(probs, axis=1)
    pick = np.minimum((cum <= rng.random(len(probs))[:, None] * cum[:, -1:]).sum(axis=1),
                      probs.shape[1] - 1)
    rows = np.arange(len(probs))
    return np.where(available[rows, pick], pick, np.argmax(available * probs, axis=1))


def logged_conditionals(policy, scores: np.ndarray, shown: np.ndarray) -> np.ndarray:
    """[R, S] probability of each logged post at its slot given the logged slots above it."""
    slot_probs = policy(scores)
    available = np.ones(scores.shape, dtype=bool)
    rows = np.arange(len(scores))
    out = np.empty(shown.shape)
    for slot in range(shown.shape[1]):
        out[:, slot] = slot_probs(available)[rows, shown[:, slot]]
        available[rows, shown[:, slot]] = False
    return out


def slot_marginals(policy, scores: np.ndarray, n_slots: int, n_samples: int,
                   rng: np.random.Generator) -> np.ndarray:
    """[R, S, C] probability of each candidate at each slot, marginal over the slots above.

    Slot 1 is exact. Deeper slots average, over `n_samples` sampled prefixes, the policy's
    probability of each candidate given the prefix (Rao-Blackwellised Monte Carlo: unbiased,
    and far less noisy than counting placements).
    """
    n_req, n_cand = scores.shape
    slot_probs = policy(np.repeat(scores, n_samples, axis=0))  # rows: (request, sample)
    available = np.ones((n_req * n_samples, n_cand), dtype=bool)
    rows = np.arange(len(available))
    out = np.empty((n_req, n_slots, n_cand))
    for slot in range(n_slots):
        probs = slot_probs(available)
        out[:, slot] = probs.reshape(n_req, n_samples, n_cand).mean(axis=1)
        available[rows, _sample(probs, available, rng)] = False
    return out


def logged_marginals(policy, scores: np.ndarray, shown: np.ndarray, n_samples: int,
                     rng: np.random.Generator, chunk: int = 1024) -> np.ndarray:
    """[R, S] probability that the policy puts the logged post of slot k at slot k (any prefix).

    Importance sampling that is unbiased and never 0 where the policy can reach the post: for
    the post a of slot k, prefixes are sampled from the policy with a removed, and each counts
    prod_{j<k} (1 - p_j(a | prefix)) * p_k(a | prefix). (Plain Monte Carlo can miss a post that
    the policy nearly always places higher, and 1 / 0 weights would follow.)
    """
    n_req, n_slots = shown.shape
    out = np.empty((n_req, n_slots))
    for start in range(0, n_req, chunk):
        sh = shown[start:start + chunk]
        r = len(sh)
        # rows: (request, k, sample)
        slot_probs = policy(np.repeat(scores[start:start + chunk], n_slots * n_samples, axis=0))
        post = np.repeat(sh.reshape(-1), n_samples)
        slot_of_row = np.tile(np.repeat(np.arange(n_slots), n_samples), r)
        rows = np.arange(len(post))
        available = np.ones((len(post), scores.shape[1]), dtype=bool)
        weight, result = np.ones(len(post)), np.zeros(len(post))
        for slot in range(n_slots):
            probs = slot_probs(available)
            p_post = probs[rows, post]
            here = slot_of_row == slot
            result[here] = weight[here] * p_post[here]
            if slot == n_slots - 1:
                break
            weight *= 1.0 - p_post
            probs[rows, post] = 0.0  # the next prefix slot: the policy without `post`
            available[rows, _sample(probs, available & (probs > 0), rng)] = False
        out[start:start + r] = result.reshape(r, n_slots, n_samples).mean(axis=2)
    return out
