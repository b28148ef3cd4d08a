"""Logs + embeddings -> ranker inputs: a KeyedJaggedTensor of sparse ids and a dense tensor.

Feature groups (switch any off with `ranker.features`):

    ids               sparse: member_id, author_id (contiguous indices into embedding tables)
    post_embedding    dense:  the post vector                                        [D]
    member_embedding  dense:  the member's engagement-history vector at the row's time  [D]
    cosine            dense:  member . post (the retrieval score)                    [1]
    context           dense:  1/position, post age (weeks), log connections / 10,
                              activity level, log tenure / 10                        [5]

Member vectors are point-in-time (ranker/history.py): built from engagements strictly before
each row's timestamp, so no row sees its own label. Everything is vectorised over rows (no
per-row Python). Shape legend: B rows, D vector dim.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import torch
from torchrec import KeyedJaggedTensor

from ranker.history import MemberHistory
from recsim.world import hours_since_start, lookup_sorted

FEATURE_GROUPS = ("ids", "post_embedding", "member_embedding", "cosine", "context")
SPARSE_KEYS = ("member_id", "author_id")


def check_groups(groups: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    unknown = [g for g in groups if g not in FEATURE_GROUPS]
    if unknown:
        raise ValueError(f"ranker.features: unknown feature group(s) {unknown}; "
                         f"known groups are {list(FEATURE_GROUPS)}")
    if "ids" not in groups:
        raise ValueError("ranker.features: the DLRM model needs the 'ids' group (sparse features)")
    if len(groups) == 1:
        raise ValueError("ranker.features: at least one dense group is needed beside 'ids'")
    return tuple(groups)


@dataclass
class FeatureSpace:
    """Lookup tables shared by training and scoring (built once from the world)."""

    groups: tuple[str, ...]
    post_ids: np.ndarray  # sorted
    post_vectors: np.ndarray  # [P, D], row i for post_ids[i]
    post_author_index: np.ndarray  # [P] contiguous author index
    post_created_h: np.ndarray  # [P]
    member_ids: np.ndarray  # sorted
    history: MemberHistory
    member_numeric: np.ndarray  # [M, 3] log connections / 10, activity, log tenure / 10
    num_authors: int

    @classmethod
    def build(cls, groups, posts: pl.DataFrame, post_vectors: np.ndarray, members: pl.DataFrame,
              history: MemberHistory) -> "FeatureSpace":
        """`post_vectors` rows follow `posts`' row order."""
        order = np.argsort(posts["post_id"].to_numpy())
        author_ids = posts["author_id"].to_numpy()[order]
        _, author_index = np.unique(author_ids, return_inverse=True)
        created = posts.select(hours_since_start(pl.col("created_at"))).to_series().to_numpy()
        morder = np.argsort(members["member_id"].to_numpy())
        numeric = np.stack([
            np.log1p(members["connections"].to_numpy()) / 10,
            members["activity_level"].to_numpy(),
            np.log1p(members["tenure_days"].to_numpy()) / 10,
        ], axis=1)[morder]
        return cls(check_groups(groups), posts["post_id"].to_numpy()[order], post_vectors[order],
                   author_index, created[order], members["member_id"].to_numpy()[morder],
                   history, numeric, int(author_index.max()) + 1)

    @property
    def dense_dim(self) -> int:
        d = self.post_vectors.shape[1]
        sizes = {"post_embedding": d, "member_embedding": d, "cosine": 1, "context": 5}
        return sum(sizes[g] for g in self.groups if g in sizes)

    def table_sizes(self) -> dict[str, int]:
        return {"member_id": len(self.member_ids), "author_id": self.num_authors}

    def build_batch(self, rows: pl.DataFrame) -> tuple[KeyedJaggedTensor, torch.Tensor]:
        """rows (member_id, post_id, position, timestamp) -> (sparse KJT [B], dense [B, dense_dim])."""
        m = lookup_sorted(self.member_ids, rows["member_id"].to_numpy(), "member_id")
        p = lookup_sorted(self.post_ids, rows["post_id"].to_numpy(), "post_id")
        n = len(m)
        sparse = KeyedJaggedTensor.from_lengths_sync(
            keys=list(SPARSE_KEYS),
            values=torch.from_numpy(np.concatenate([m, self.post_author_index[p]]).astype(np.int64)),
            lengths=torch.ones(2 * n, dtype=torch.int32),
        )
        t = rows.select(hours_since_start(pl.col("timestamp"))).to_series().to_numpy()
        parts = []
        if "post_embedding" in self.groups:
            parts.append(self.post_vectors[p])
        if "member_embedding" in self.groups or "cosine" in self.groups:
            member_vectors, _ = self.history.vectors_at(rows["member_id"].to_numpy(), t)
        if "member_embedding" in self.groups:
            parts.append(member_vectors)
        if "cosine" in self.groups:
            parts.append(np.einsum("bd,bd->b", self.post_vectors[p], member_vectors)[:, None])
        if "context" in self.groups:
            age_weeks = np.maximum(t - self.post_created_h[p], 0.0) / (24 * 7)
            position = rows["position"].to_numpy().astype(np.float64)
            parts.append(np.column_stack([1.0 / position, age_weeks, self.member_numeric[m]]))
        dense = torch.from_numpy(np.concatenate(parts, axis=1).astype(np.float32))
        return sparse, dense
