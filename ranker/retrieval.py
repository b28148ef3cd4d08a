"""FAISS candidate retrieval: an inner-product index over unit post vectors, top-K search
returning a polars frame, and recall@K. Member query vectors come from engagement history
(ranker/history.py).

Shape legend: P posts, M members, D vector dim, K candidates per member.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import faiss
import numpy as np
import polars as pl


log = logging.getLogger(__name__)


@dataclass
class RetrievalConfig:
    index: str = "Flat"  # any faiss.index_factory string: Flat, HNSW32, IVF256,Flat, ...
    top_k: int = 100
    recall_at: tuple[int, ...] = (10, 50, 100)
    history_halflife_days: float = 7.0  # recency weight of engaged posts in a member's vector
    nprobe: int = 16
    ef_search: int = 128


class PostIndex:
    """An index over post vectors keyed by post_id (inner product on unit vectors = cosine)."""

    def __init__(self, post_ids: np.ndarray, vectors: np.ndarray, cfg: RetrievalConfig):
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.dim = vectors.shape[1]
        inner = faiss.index_factory(self.dim, cfg.index, faiss.METRIC_INNER_PRODUCT)
        if not inner.is_trained:
            inner.train(vectors)
        self.index = faiss.IndexIDMap2(inner)
        self.index.add_with_ids(vectors, np.asarray(post_ids, dtype=np.int64))
        faiss.ParameterSpace().set_index_parameters(
            inner, _search_params(cfg.index, cfg.nprobe, cfg.ef_search))

    def search(self, member_ids: np.ndarray, queries: np.ndarray, k: int) -> pl.DataFrame:
        """Top-k posts per query -> frame (member_id, post_id, score, rank), rank from 1."""
        scores, ids = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        n, k = ids.shape
        frame = pl.DataFrame({
            "member_id": np.repeat(np.asarray(member_ids, dtype=np.int64), k),
            "post_id": ids.ravel(),
            "score": scores.ravel().astype(np.float64),
            "rank": np.tile(np.arange(1, k + 1, dtype=np.int32), n),
        })
        return frame.filter(pl.col("post_id") >= 0)  # -1 pads when fewer than k posts


def _search_params(index: str, nprobe: int, ef_search: int) -> str:
    params = []
    if "IVF" in index:
        params.append(f"nprobe={nprobe}")
    if "HNSW" in index:
        params.append(f"efSearch={ef_search}")
    return ",".join(params)


def recall_at_k(retrieved: pl.DataFrame, held_out: pl.DataFrame, ks: tuple[int, ...]) -> dict[int, float]:
    """Mean over members of |top-k ∩ held-out engaged posts| / |held-out engaged posts|.

    Args:
        retrieved: (member_id, post_id, rank) from `PostIndex.search`.
        held_out: (member_id, post_id) pairs the members truly engaged with later.
    """
    truth = held_out.select("member_id", "post_id").unique()
    n_true = truth.group_by("member_id").len(name="n_true")
    out = {}
    for k in ks:
        hits = (retrieved.filter(pl.col("rank") <= k).join(truth, on=["member_id", "post_id"])
                .group_by("member_id").len(name="hits"))
        per_member = n_true.join(hits, on="member_id", how="left").with_columns(
            recall=pl.col("hits").fill_null(0) / pl.col("n_true"))
        out[k] = float(per_member["recall"].mean())
    return out
