"""How well retrieval finds what members engage with later: recall@K against held-out
engagements, the exact-search reference, and the retrieval step of a run.

    recall@K   mean over members of |top-K ∩ held-out engaged posts| / |held-out engaged posts|
    overlap@K  share of the exact top-K that an approximate index also returns

Shape legend: M query members, P posts, D dim.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import faiss
import numpy as np
import polars as pl

from ranker.retrieval.history import MemberHistory
from ranker.retrieval.config import RetrievalConfig
from ranker.retrieval.index import PostIndex

log = logging.getLogger(__name__)


def exact_search(post_vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force reference: ([M, k] scores, [M, k] row positions) by inner product."""
    index = faiss.IndexFlatIP(post_vectors.shape[1])
    index.add(np.ascontiguousarray(post_vectors, dtype=np.float32))
    return index.search(np.ascontiguousarray(queries, dtype=np.float32), k)


def recall_at_k(retrieved: pl.DataFrame, held_out: pl.DataFrame, ks: tuple[int, ...]) -> dict[int, float]:
    """Mean over members of |top-k ∩ held-out engaged posts| / |held-out engaged posts|.

    Args:
        retrieved: (member_id, post_id, rank) from `PostIndex.search`.
        held_out: (member_id, post_id) pairs the members truly engaged with later.
    """
    per_member = recall_per_member(retrieved, held_out, ks)
    return {k: float(per_member[f"recall@{k}"].mean()) for k in ks}


def recall_per_member(retrieved: pl.DataFrame, held_out: pl.DataFrame,
                      ks: tuple[int, ...]) -> pl.DataFrame:
    """(member_id, n_true, recall@k for each k): one row per member with held-out engagements."""
    truth = held_out.select("member_id", "post_id").unique()
    out = truth.group_by("member_id").len(name="n_true")
    hits = retrieved.select("member_id", "post_id", "rank").join(truth, on=["member_id", "post_id"])
    for k in ks:
        per = hits.filter(pl.col("rank") <= k).group_by("member_id").len(name="hits")
        out = out.join(per, on="member_id", how="left").with_columns(
            (pl.col("hits").fill_null(0) / pl.col("n_true")).alias(f"recall@{k}")).drop("hits")
    return out.sort("member_id")


def overlap_at_k(approx_ids: np.ndarray, exact_ids: np.ndarray) -> float:
    """Mean share of each row's exact top-k ids that the approximate top-k also holds."""
    k = exact_ids.shape[1]
    hits = [len(np.intersect1d(a[a >= 0], e[e >= 0], assume_unique=True)) for a, e in
            zip(approx_ids, exact_ids)]
    return float(np.mean(hits) / k)


@dataclass
class RetrievalResult:
    """The run's retrieval step: member histories and recall@K, per post encoder."""

    histories: dict  # encoder key -> MemberHistory over that encoder's post vectors
    recall: dict  # encoder key -> {K: recall@K}
    n_query_members: int  # members with a held-out engagement (the queries)


def evaluate_retrieval(impressions: pl.DataFrame, held_out: pl.DataFrame, split_hours: float,
                       post_ids: np.ndarray, vectors: dict, cfg: RetrievalConfig, metric: str
                       ) -> RetrievalResult:
    """Member vectors from engagements before the split; top-K of a FAISS index over the posts;
    recall@K of each member's held-out engagements; once per post encoder in `vectors`.

    Args:
        impressions: the whole log (histories only read events before `split_hours`).
        held_out: (member_id, post_id) engagements after the split.
        split_hours: the split time, in hours since the world's start.
        vectors: encoder key -> [P, D] post vectors, rows in `post_ids` order.
        metric: the engagement that builds histories (recsim.world.rewards metric).
    """
    query_members = held_out["member_id"].unique().sort().to_numpy()
    at_split = np.full(len(query_members), split_hours)
    histories, recall = {}, {}
    for key, post_vectors in vectors.items():
        history = MemberHistory(impressions, post_ids, post_vectors, cfg.history_halflife_days, metric)
        queries, _ = history.vectors_at(query_members, at_split)
        retrieved = PostIndex(post_ids, post_vectors, cfg).search(query_members, queries, cfg.top_k)
        histories[key] = history
        recall[key] = recall_at_k(retrieved, held_out, tuple(cfg.recall_at))
    return RetrievalResult(histories, recall, len(query_members))
