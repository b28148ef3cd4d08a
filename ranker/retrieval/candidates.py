"""Retrieval as the funnel's candidate source: FAISS top-K per request, over the posts live at
the request's time, from the member's vector at that time.

    1. member_queries        each request's query vector: the member's engagement history
                             strictly before the request (recency-weighted), or, with none yet,
                             their profile text through the post encoder
    2. retrieve_candidates   requests grouped into time buckets; each bucket searches once, over
                             the posts created within [bucket end - window, bucket start]: never
                             a post from the future, never one outside the post window, for
                             every request of the bucket; optionally without the posts the
                             member was already shown before the request

Shape legend: R requests, D dim, K candidates per request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl

from ranker.retrieval.history import MemberHistory
from ranker.retrieval.config import RetrievalConfig
from ranker.retrieval.index import PostIndex
from recsim.world.timeline import hours_since_start

log = logging.getLogger(__name__)


def member_queries(history: MemberHistory, member_ids: np.ndarray, t_hours: np.ndarray,
                   profile_vectors: Callable[[np.ndarray], np.ndarray] | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """[R, D] query vectors and [R] engagement counts at each request's time.

    Args:
        member_ids, t_hours: [R] the request's member and time (hours since the world's start).
        profile_vectors: member ids [M] -> [M, D] vectors (their profile texts embedded), used
            for requests whose member has no engagement before the request; None: the
            history's prior (the mean engaged post).
    """
    queries, count = history.vectors_at(member_ids, t_hours)
    cold = count == 0
    if profile_vectors is not None and cold.any():
        members, inverse = np.unique(member_ids[cold], return_inverse=True)
        profiles = np.asarray(profile_vectors(members), dtype=np.float32)
        profiles /= np.linalg.norm(profiles, axis=1, keepdims=True).clip(1e-12)
        queries[cold] = profiles[inverse]
    return queries, count


def retrieve_candidates(index: PostIndex, queries: np.ndarray, requests: pl.DataFrame, k: int,
                        window_days: float, bucket_hours: float = 1.0,
                        seen: pl.DataFrame | None = None) -> pl.DataFrame:
    """Top-k live posts per request -> (request_id, post_id, retrieval_score, retrieval_rank).

    Args:
        index: built with `created` in hours since the world's start.
        queries: [R, D] one row per request, aligned with `requests`.
        requests: (request_id, member_id, t_hours) the requests, one row each.
        k: candidates per request (fewer when fewer posts are live).
        window_days: a post is live for this long after its creation (the world's window).
        bucket_hours: requests within one bucket share one search (and one live set).
        seen: (member_id, post_id, t_hours) impressions; a post the member was shown before
            the request's time is not retrieved again. None: no exclusion.
    """
    if k < 1:
        raise ValueError(f"retrieval k: must be >= 1, got {k}")
    t = requests["t_hours"].to_numpy()
    bucket = np.floor(t / bucket_hours).astype(np.int64)
    extra = 0 if seen is None else int(
        seen.group_by("member_id").agg(pl.col("post_id").n_unique())["post_id"].max() or 0)
    fetch = max(1, min(k + extra, index.ntotal))
    parts = []
    for b in np.unique(bucket):
        rows = np.flatnonzero(bucket == b)
        lo, hi = (b + 1) * bucket_hours - window_days * 24, b * bucket_hours
        scores, ids = index.search_labels(queries[rows], fetch, created_range=(lo, hi))
        parts.append(pl.DataFrame({
            "request_id": np.repeat(requests["request_id"].to_numpy()[rows], ids.shape[1]),
            "post_id": ids.ravel(), "retrieval_score": scores.ravel().astype(np.float64),
            "retrieval_rank": np.tile(np.arange(1, ids.shape[1] + 1, dtype=np.int32), len(rows)),
        }))
    found = pl.concat(parts).filter(pl.col("post_id") >= 0)
    if seen is not None:
        found = _drop_seen(found, requests, seen)
    return (found.sort("request_id", "retrieval_rank")
            .with_columns(retrieval_rank=pl.int_range(1, pl.len() + 1, dtype=pl.Int32)
                          .over("request_id"))
            .filter(pl.col("retrieval_rank") <= k))


def _drop_seen(found: pl.DataFrame, requests: pl.DataFrame, seen: pl.DataFrame) -> pl.DataFrame:
    """Drop (request, post) pairs whose post the request's member was shown before it."""
    shown_before = (found.select("request_id", "post_id")
                    .join(requests.select("request_id", "member_id", "t_hours"), on="request_id")
                    .join(seen.select("member_id", "post_id", seen_t="t_hours"),
                          on=["member_id", "post_id"])
                    .filter(pl.col("seen_t") < pl.col("t_hours"))
                    .select("request_id", "post_id").unique())
    return found.join(shown_before, on=["request_id", "post_id"], how="anti")


class HistoryQueries:
    """Query vectors from engagement history at each request's time (`member_queries`)."""

    def __init__(self, history: MemberHistory,
                 profile_vectors: Callable[[np.ndarray], np.ndarray] | None = None):
        self.history, self.profile_vectors = history, profile_vectors

    def __call__(self, member_ids: np.ndarray, t_hours: np.ndarray) -> np.ndarray:
        return member_queries(self.history, member_ids, t_hours, self.profile_vectors)[0]


class DualEncoderQueries:
    """Query vectors from the text dual encoder: each request's member prompt (profile, numbers
    as its prompt config writes them, the last engaged posts strictly before the request)
    through the member tower."""

    def __init__(self, encoder, impressions: pl.DataFrame, posts: pl.DataFrame,
                 members: pl.DataFrame):
        self.encoder, self.impressions, self.posts, self.members = encoder, impressions, posts, members

    def __call__(self, member_ids: np.ndarray, t_hours: np.ndarray) -> np.ndarray:
        from ranker.retrieval.prompts import recent_posts_before, render_prompts

        cfg = self.encoder.cfg
        rows = (pl.DataFrame({"member_id": np.asarray(member_ids, dtype=np.int64),
                              "t_hours": np.asarray(t_hours, dtype=np.float64)})
                .join(self.members, on="member_id", how="left", maintain_order="left"))
        recent = recent_posts_before(self.impressions, self.posts, rows, cfg.engagement,
                                     cfg.prompt.n_recent, cfg.prompt.recent_chars)
        return self.encoder.embed_members(render_prompts(rows, recent, cfg.prompt, self.members))


@dataclass
class RetrievalSource:
    """Everything the `retrieval` candidate source needs for one index of post vectors."""

    index: PostIndex  # over every post, `created` in hours since the world's start
    queries: Callable[[np.ndarray, np.ndarray], np.ndarray]  # member ids, hours -> [R, D]
    window_days: float  # the world's post window: how long a post stays live
    seen: pl.DataFrame  # (member_id, post_id, t_hours) every impression, for exclude_seen
    bucket_hours: float = 1.0

    @classmethod
    def build(cls, posts: pl.DataFrame, post_vectors: np.ndarray, queries, cfg: RetrievalConfig,
              impressions: pl.DataFrame, window_days: float) -> "RetrievalSource":
        created = posts.select(hours_since_start(pl.col("created_at"))).to_series().to_numpy()
        index = PostIndex(posts["post_id"].to_numpy(), post_vectors, cfg, created=created)
        seen = impressions.select("member_id", "post_id",
                                  t_hours=hours_since_start(pl.col("timestamp")))
        return cls(index, queries, window_days, seen)

    def candidates(self, requests: pl.DataFrame, k: int, exclude_seen: bool = False
                   ) -> tuple[pl.DataFrame, float]:
        """(request_id, post_id, retrieval_score, retrieval_rank) for `requests` (request_id,
        member_id, timestamp), and the seconds it took."""
        start = time.perf_counter()
        requests = requests.select("request_id", "member_id",
                                   t_hours=hours_since_start(pl.col("timestamp")))
        queries = self.queries(requests["member_id"].to_numpy(), requests["t_hours"].to_numpy())
        found = retrieve_candidates(self.index, queries, requests, k, self.window_days,
                                    self.bucket_hours, self.seen if exclude_seen else None)
        return found, time.perf_counter() - start
