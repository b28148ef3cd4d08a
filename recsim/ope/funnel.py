"""A policy is a funnel: candidate source -> ranker -> slate.

    1. candidates   the request's logged candidates (what off-policy estimators can judge), or
                    FAISS top-K over the posts live at the request's time (ranker/retrieval/
                    candidates.py); each marked `logged` when the logging policy could have
                    shown it (it is in the request's logged candidate set)
    2. scores       the policy's TorchRec ranker scores every candidate of every request, in
                    batches across requests (ranker.train.score_candidates)
    3. slate        the top N by score (temperature 0; ties to the lower post_id), or
                    Plackett-Luce at the policy temperature: its marginals (each post's
                    probability at each slot, Monte Carlo over sampled prefixes) for the truth
                    and the offline estimates, and one sampled slate per request, the one an
                    online test would serve

The frames every later step reads (R requests, S slots):

    slates   request_id, post_id, position (1..S), prob   the policy's probability of the post
                                                            at the position
    served   request_id, post_id, position, prob (= 1)   one slate per request
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from recsim.ope import slate_offline
from recsim.world import slates as pl_slates

log = logging.getLogger(__name__)

SOURCES = ("logged", "retrieval")


@dataclass
class FunnelOutput:
    """One policy served to the evaluation requests."""

    candidates: pl.DataFrame  # request_id, post_id, logged, score, click_prob
    slates: pl.DataFrame  # request_id, post_id, position, prob
    served: pl.DataFrame  # request_id, post_id, position, prob (= 1): the slate shown online
    seconds: dict[str, float] = field(default_factory=dict)  # per stage: candidates, scoring, slate


def score_rows(candidates: pl.DataFrame, requests: pl.DataFrame, scorer: Callable,
               position: int = 1) -> tuple[pl.DataFrame, dict]:
    """Attach the ranker's `score` (log ranking score) and `click_prob` to every candidate;
    also the seconds the ranker spent on features and on its forward pass.

    `scorer(rows) -> ranker.train.Scores` over rows (request_id, member_id, post_id, position,
    timestamp); every request's candidates are scored at `position` (the ranker's score does not
    depend on the slot it is asked about beyond its position feature).
    """
    rows = (candidates.join(requests.select("request_id", "member_id", "timestamp"),
                            on="request_id", maintain_order="left")
            .with_columns(position=pl.lit(position, dtype=pl.Int32)))
    scores = scorer(rows)
    scored = candidates.with_columns(score=scores.score.astype(np.float64),
                                     click_prob=scores.click_prob.astype(np.float64))
    return scored, getattr(scores, "seconds", {})


def top_slates(scored: pl.DataFrame, slate_size: int) -> pl.DataFrame:
    """The deterministic slate: top `slate_size` by score per request, ties to the lower
    post_id -> (request_id, post_id, position, prob = 1)."""
    return (scored.sort(["request_id", "score", "post_id"], descending=[False, True, False])
            .with_columns(position=pl.int_range(1, pl.len() + 1, dtype=pl.Int32).over("request_id"))
            .filter(pl.col("position") <= slate_size)
            .select("request_id", "post_id", "position", prob=pl.lit(1.0)))


def plackett_luce_slates(scored: pl.DataFrame, slate_size: int, temperature: float,
                         n_samples: int, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(slates: each candidate's marginal at each slot, exact where affordable and Monte Carlo
    beyond (recsim.ope.slate_offline.slate_marginals); served: one sampled slate per request)
    for Plackett-Luce at `temperature` over each request's scored candidates."""
    policy_scores = scored.select("request_id", "post_id", "score")
    marginals = slate_offline.slate_marginals(policy_scores, temperature, slate_size, n_samples,
                                              seed)
    padded = slate_offline.pad(policy_scores)
    n_slots = min(slate_size, padded.post_id.shape[1])
    policy = slate_offline.on_finite(pl_slates.plackett_luce(temperature))
    rng = np.random.default_rng([seed, 1])
    chosen, _ = pl_slates.sample_slates(policy, padded.score, n_slots, rng)
    picked = np.take_along_axis(padded.post_id, chosen, axis=1)
    served = pl.DataFrame({
        "request_id": np.repeat(padded.request_id, n_slots), "post_id": picked.ravel(),
        "position": np.tile(np.arange(1, n_slots + 1, dtype=np.int32), len(picked)),
        "prob": 1.0,
    }).filter(pl.col("post_id") >= 0)
    return marginals, served


def serve(candidates: pl.DataFrame, requests: pl.DataFrame, scorer: Callable, slate_size: int,
          temperature: float, seed: int, n_samples: int = 32) -> FunnelOutput:
    """Steps 2-3 for one policy over its candidates (request_id, post_id, logged)."""
    start = time.perf_counter()
    scored, ranker_s = score_rows(candidates, requests, scorer)
    scoring_s = time.perf_counter() - start
    start = time.perf_counter()
    if temperature == 0:
        slates = top_slates(scored, slate_size)
        served = slates
    else:
        slates, served = plackett_luce_slates(scored, slate_size, temperature, n_samples, seed)
    features_s = ranker_s.get("features", 0.0)
    return FunnelOutput(scored, slates, served,
                        {"features": features_s, "scoring": scoring_s - features_s,
                         "slate": time.perf_counter() - start})


def logged_candidates(candidates: pl.DataFrame, requests: pl.DataFrame) -> pl.DataFrame:
    """Source `logged`: each evaluation request's logged candidates (all `logged`)."""
    return (candidates.join(requests.select("request_id"), on="request_id")
            .select("request_id", "post_id", logged=pl.lit(True)))


def mark_logged(retrieved: pl.DataFrame, candidates: pl.DataFrame) -> pl.DataFrame:
    """Source `retrieval`: (request_id, post_id, ...) with `logged` = in the request's logged
    candidate set (the posts the logging policy could have shown)."""
    known = candidates.select("request_id", "post_id", logged=pl.lit(True))
    return (retrieved.join(known, on=["request_id", "post_id"], how="left", maintain_order="left")
            .with_columns(pl.col("logged").fill_null(False)))


def funnel_stats(out: FunnelOutput, requests: pl.DataFrame, later: pl.DataFrame,
                 ks: tuple[int, ...] = (10, 100)) -> dict:
    """The funnel section of a policy: candidates per request, recall of later engagements in
    its candidate set, the slate's share on logged candidates, seconds per request by stage.

    Args:
        requests: (request_id, member_id, timestamp) the evaluation requests.
        later: (member_id, post_id, timestamp) engagements in the log; for each request the
            member's engagements after the request's time are what its candidates should hold.
    """
    n_req = max(requests.height, 1)
    per_request = out.candidates.group_by("request_id").len()["len"]
    ranked = out.candidates.sort(["request_id", "score", "post_id"], descending=[False, True, False]
                                 ).with_columns(rank=pl.int_range(1, pl.len() + 1).over("request_id"))
    targets = (requests.select("request_id", "member_id", req_t="timestamp")
               .join(later.select("member_id", "post_id", "timestamp"), on="member_id")
               .filter(pl.col("timestamp") > pl.col("req_t")).select("request_id", "post_id").unique())
    hits = targets.join(ranked.select("request_id", "post_id", "rank"), on=["request_id", "post_id"],
                        how="left")
    recall = {}
    if hits.height:
        per = hits.group_by("request_id").agg(
            [(pl.col("rank") <= k).fill_null(False).mean().alias(f"recall@{k}") for k in ks]
            + [pl.col("rank").is_not_null().mean().alias("recall@all")])
        recall = {c: float(per[c].mean()) for c in per.columns if c != "request_id"}
    on_logged = out.slates.join(out.candidates.select("request_id", "post_id", "logged"),
                                on=["request_id", "post_id"], how="left")
    slots = max(float(on_logged["prob"].sum()), 1e-12)
    return {
        "candidates_per_request": float(per_request.mean()) if per_request.len() else 0.0,
        "min_candidates": int(per_request.min()) if per_request.len() else 0,
        "recall_of_later_engagements": recall,
        "requests_with_later_engagements": int(targets["request_id"].n_unique()),
        "slate_share_logged": float((on_logged["prob"] * on_logged["logged"].fill_null(False)).sum()
                                    / slots),
        "ms_per_request": {stage: 1000 * s / n_req for stage, s in out.seconds.items()},
    }


def retrieval_sources(roles: dict, posts: pl.DataFrame, members: pl.DataFrame,
                      impressions: pl.DataFrame, train_impressions: pl.DataFrame, post_vectors,
                      histories: dict, retrieval_cfg, dual_encoder_cfg, window_days: float) -> dict:
    """role -> its `retrieval` candidate source (ranker/retrieval/candidates.py RetrievalSource),
    or None for the `logged` source. Member vectors `history`: the role's post vectors and
    engagement history (members without one: their profile text through the role's post
    encoder); `dual_encoder`: one text dual encoder trained on the training period, its own post
    vectors, member prompts at each request's time. Sources that match are built once.

    Args:
        roles: role -> PolicyConfig; post_vectors: embeddings.post_vectors.PostVectors;
        histories: encoder key -> MemberHistory (ranker.retrieval.recall.RetrievalResult).
    """
    import dataclasses

    from ranker.retrieval.candidates import HistoryQueries, RetrievalSource

    out, built = {}, {}
    for role, policy in roles.items():
        if policy.source != "retrieval":
            out[role] = None
            continue
        cfg = dataclasses.replace(retrieval_cfg, index=policy.index or retrieval_cfg.index)
        key = (policy.member_vectors, cfg.index,
               post_vectors.key_of[role] if policy.member_vectors == "history" else None)
        if key not in built:
            if policy.member_vectors == "history":
                enc = post_vectors.key_of[role]
                queries = HistoryQueries(histories[enc], _profile_embedder(members, post_vectors.pools[enc]))
                vectors = post_vectors.vectors[enc]
            else:
                queries, vectors = _dual_encoder(dual_encoder_cfg, impressions, train_impressions,
                                                 posts, members)
            built[key] = RetrievalSource.build(posts, vectors, queries, cfg, impressions, window_days)
        out[role] = built[key]
    return out


def _profile_embedder(members: pl.DataFrame, pool) -> Callable[[np.ndarray], np.ndarray]:
    """member ids -> their profile texts through the post encoder of `pool` (Ray actors,
    through the embedding cache)."""
    from embeddings.post_vectors import embed_with_cache

    profile = members.select("member_id", "profile_text").sort("member_id")
    ids, texts = profile["member_id"].to_numpy(), profile["profile_text"].to_numpy()

    def embed(member_ids: np.ndarray) -> np.ndarray:
        return embed_with_cache(list(texts[np.searchsorted(ids, member_ids)]), pool,
                                "embedding profiles (members without history)")
    return embed


def _dual_encoder(cfg, impressions: pl.DataFrame, train_impressions: pl.DataFrame,
                  posts: pl.DataFrame, members: pl.DataFrame):
    """(query callable, [P, D] post vectors) of a text dual encoder trained on the training
    period's engagements (ranker/retrieval/dual_encoder.py)."""
    from ranker.retrieval.candidates import DualEncoderQueries
    from ranker.retrieval.dual_encoder import DualEncoder, train_dual_encoder, training_examples

    encoder = DualEncoder(cfg)
    start = time.perf_counter()
    train_dual_encoder(encoder, training_examples(train_impressions, posts, members, cfg), posts, cfg)
    log.info("dual encoder: %d steps trained in %.1f s", cfg.steps, time.perf_counter() - start)
    return DualEncoderQueries(encoder, impressions, posts, members), encoder.embed_posts(posts)
