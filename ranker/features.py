"""Logs + embeddings -> ranker inputs: a KeyedJaggedTensor of sparse ids and a dense tensor.

Feature groups (a policy lists the ones it uses, e.g. `sim.treatment.features`):

    ids               sparse: member_id, author_id, post_topic (one id per row each)
    history           sparse, jagged: recent_authors, recent_topics: the authors and topics of
                      the member's last `recent_k` clicked posts before the row's time (0..k ids)
    post_embedding    dense:  the post vector, reduced to `embedding_dims`          [E]
    member_embedding  dense:  the member's engagement-history vector at the row's time [E]
    cosine            dense:  member . post of the full vectors (the retrieval score) [1]
    counts            dense:  log connections / 10, activity level, log tenure / 10, and
                      point-in-time counts before the row's time: log1p of the member's clicks,
                      the post's impressions and the post's clicks, / 5            [6]
    context           dense:  1 / position, post age in weeks                      [2]

Sparse tables (an id feature and its jagged history feature share one table): member
(member_id), author (author_id, recent_authors), topic (post_topic, recent_topics).

Embedding reduction (`embedding_dims`, `embedding_projection`): the 384-d MiniLM vectors fed
raw into the dense arch overfit the click logs; `prefix` keeps the first E dimensions and
renormalises (Matryoshka truncation: faithful for encoders trained with a Matryoshka loss, a
random-ish projection for others), `pca` projects onto the posts' top E principal directions
(fitted on the post vectors, no labels) and renormalises, `none` keeps the full vector.

Everything is point-in-time (events strictly before each row's timestamp, so no row sees its
own label; slates share a timestamp, so a slate's own clicks are unseen too) and vectorised
over rows: events are sorted once by (key, time) and each lookup is a binary search
(ranker.retrieval.history.PointInTimeEvents, shared with history vectors and prompts).
Shape legend: B rows, D vector dim, E reduced dim, K recent_k.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import torch
from torchrec import KeyedJaggedTensor

from ranker.retrieval.history import MemberHistory, PointInTimeEvents, last_k
from recsim.world.timeline import hours_since_start
from recsim.world.schema import lookup_sorted

FEATURE_GROUPS = ("ids", "history", "post_embedding", "member_embedding", "cosine", "counts",
                  "context")
SPARSE_GROUPS = {"ids": ("member_id", "author_id", "post_topic"),
                 "history": ("recent_authors", "recent_topics")}
DENSE_SIZES = {"cosine": 1, "counts": 6, "context": 2}  # the embeddings' size is E
# Sparse feature -> embedding table; features of one table share its rows.
TABLE_OF = {"member_id": "member", "author_id": "author", "recent_authors": "author",
            "post_topic": "topic", "recent_topics": "topic"}
TABLES = ("member", "author", "topic")
PROJECTIONS = ("none", "prefix", "pca")


def check_groups(groups: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The groups in canonical order; a clear error for unknown or unusable sets."""
    unknown = [g for g in groups if g not in FEATURE_GROUPS]
    if unknown:
        raise ValueError(f"ranker.features: unknown feature group(s) {unknown}; "
                         f"known groups are {list(FEATURE_GROUPS)}")
    if not any(g in SPARSE_GROUPS for g in groups):
        raise ValueError("ranker.features: the model needs a sparse group ('ids' or 'history') "
                         f"for its EmbeddingBagCollection; got {list(groups)}")
    if not any(g not in SPARSE_GROUPS for g in groups):
        raise ValueError("ranker.features: at least one dense group is needed beside the sparse "
                         f"ones ({[g for g in FEATURE_GROUPS if g not in SPARSE_GROUPS]})")
    return tuple(g for g in FEATURE_GROUPS if g in groups)


def fit_projection(vectors: np.ndarray, dims: int | None, projection: str) -> np.ndarray | None:
    """[E, D] projection of the post vectors (prefix or PCA basis), or None to keep them whole."""
    if projection not in PROJECTIONS:
        raise ValueError(f"ranker.embedding_projection: unknown '{projection}'; "
                         f"choose from {list(PROJECTIONS)}")
    if projection == "none" or dims is None or dims >= vectors.shape[1]:
        return None
    if projection == "prefix":
        return np.eye(vectors.shape[1], dtype=np.float32)[:dims]
    centred = (vectors - vectors.mean(axis=0)).astype(np.float64)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    basis = vt[:dims] * np.sign(vt[:dims].sum(axis=1, keepdims=True) + 1e-30)  # fixed signs
    return basis.astype(np.float32)


def project(vectors: np.ndarray, basis: np.ndarray | None) -> np.ndarray:
    """[N, D] -> [N, E] float32 unit vectors (unchanged when basis is None)."""
    if basis is None:
        return vectors.astype(np.float32)
    out = vectors.astype(np.float32, copy=False) @ basis.T
    out /= np.sqrt(np.einsum("be,be->b", out, out))[:, None].clip(1e-12)
    return out


def _distinct_pairs(m: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """([U] first row of each distinct (m, t) pair, [B] its pair for every row): rows[first]
    [inverse] gives every row back."""
    order = np.lexsort((t, m))
    new = np.ones(len(m), dtype=bool)
    new[1:] = (m[order][1:] != m[order][:-1]) | (t[order][1:] != t[order][:-1])
    group = np.cumsum(new) - 1
    inverse = np.empty(len(m), dtype=np.int64)
    inverse[order] = group
    return order[new], inverse


@dataclass
class FeatureSpace:
    """Lookup tables shared by training and scoring (built once per world and encoder)."""

    groups: tuple[str, ...]
    post_ids: np.ndarray  # [P] sorted
    post_vectors: np.ndarray  # [P, D] full vectors, row i for post_ids[i] (for cosine)
    projection: np.ndarray | None  # [E, D] or None (full vectors)
    post_reduced: np.ndarray  # [P, E] reduced vectors (the post_embedding feature)
    post_author_index: np.ndarray  # [P] contiguous author index
    post_topic_index: np.ndarray  # [P] contiguous topic index
    post_created_h: np.ndarray  # [P]
    member_ids: np.ndarray  # [M] sorted
    history: MemberHistory
    member_numeric: np.ndarray  # [M, 3] log connections / 10, activity, log tenure / 10
    num_authors: int
    num_topics: int
    clicks_by_member: PointInTimeEvents
    click_post_rows: np.ndarray  # post row of each of clicks_by_member's sorted events
    impressions_by_post: PointInTimeEvents
    clicks_by_post: PointInTimeEvents
    recent_k: int = 20
    embedding_dims: int | None = 64
    embedding_projection: str = "pca"

    @classmethod
    def build(cls, groups, posts: pl.DataFrame, post_vectors: np.ndarray, members: pl.DataFrame,
              history: MemberHistory, impressions: pl.DataFrame, recent_k: int = 20,
              embedding_dims: int | None = 64, embedding_projection: str = "pca") -> "FeatureSpace":
        """`post_vectors` rows follow `posts`' row order; `impressions` is the whole log
        (features read only the events before each row's time)."""
        groups = check_groups(groups)
        order = np.argsort(posts["post_id"].to_numpy())
        post_ids = posts["post_id"].to_numpy()[order]
        _, author_index = np.unique(posts["author_id"].to_numpy()[order], return_inverse=True)
        _, topic_index = np.unique(posts["topic"].to_numpy()[order], return_inverse=True)
        created = posts.select(hours_since_start(pl.col("created_at"))).to_series().to_numpy()
        morder = np.argsort(members["member_id"].to_numpy())
        numeric = np.stack([
            np.log1p(members["connections"].to_numpy()) / 10,
            members["activity_level"].to_numpy(),
            np.log1p(members["tenure_days"].to_numpy()) / 10,
        ], axis=1)[morder]
        vectors = post_vectors[order]
        basis = fit_projection(vectors, embedding_dims, embedding_projection)
        imp_t = impressions.select(hours_since_start(pl.col("timestamp"))).to_series().to_numpy()
        imp_post = impressions["post_id"].to_numpy()
        clicked = impressions["click"].to_numpy()
        clicks_by_member = PointInTimeEvents(impressions["member_id"].to_numpy()[clicked],
                                             imp_t[clicked])
        click_rows = lookup_sorted(post_ids, imp_post[clicked], "post_id")[clicks_by_member.order]
        return cls(
            groups, post_ids, vectors, basis, project(vectors, basis),
            author_index, topic_index, created[order], members["member_id"].to_numpy()[morder],
            history, numeric, int(author_index.max()) + 1, int(topic_index.max()) + 1,
            clicks_by_member, click_rows, PointInTimeEvents(imp_post, imp_t),
            PointInTimeEvents(imp_post[clicked], imp_t[clicked]),
            recent_k, embedding_dims, embedding_projection)

    @property
    def sparse_keys(self) -> list[str]:
        """The KJT's keys, in table order (the EmbeddingBagCollection's feature order)."""
        used = [k for g in self.groups if g in SPARSE_GROUPS for k in SPARSE_GROUPS[g]]
        return [k for table in TABLES for k in used if TABLE_OF[k] == table]

    @property
    def dense_dim(self) -> int:
        e = self.post_reduced.shape[1]
        sizes = {**DENSE_SIZES, "post_embedding": e, "member_embedding": e}
        return sum(sizes[g] for g in self.groups if g in sizes)

    def tables(self) -> dict[str, tuple[int, list[str]]]:
        """Table name -> (rows, feature names) for the tables the groups use."""
        rows = {"member": len(self.member_ids), "author": self.num_authors,
                "topic": self.num_topics}
        keys = self.sparse_keys
        return {t: (rows[t], [k for k in keys if TABLE_OF[k] == t]) for t in TABLES
                if any(TABLE_OF[k] == t for k in keys)}

    def build_batch(self, rows: pl.DataFrame) -> tuple[KeyedJaggedTensor, torch.Tensor]:
        """rows (member_id, post_id, position, timestamp) -> (sparse KJT [B], dense [B, dense_dim])."""
        member_ids = rows["member_id"].to_numpy()
        m = lookup_sorted(self.member_ids, member_ids, "member_id")
        p = lookup_sorted(self.post_ids, rows["post_id"].to_numpy(), "post_id")
        t = rows.select(hours_since_start(pl.col("timestamp"))).to_series().to_numpy()
        n = len(m)

        # Sparse: one id per row for `ids`, the last K clicked posts' authors / topics for `history`.
        values, lengths = {}, {}
        if "ids" in self.groups:
            for key, ids in (("member_id", m), ("author_id", self.post_author_index[p]),
                             ("post_topic", self.post_topic_index[p])):
                values[key], lengths[key] = ids, np.ones(n, dtype=np.int64)
        if "history" in self.groups:
            start, end = self.clicks_by_member.before(member_ids, t)
            flat, count = last_k(start, end, self.recent_k)
            recent_posts = self.click_post_rows[flat]
            values["recent_authors"] = self.post_author_index[recent_posts]
            values["recent_topics"] = self.post_topic_index[recent_posts]
            lengths["recent_authors"] = lengths["recent_topics"] = count
        keys = self.sparse_keys
        sparse = KeyedJaggedTensor.from_lengths_sync(
            keys=keys,
            values=torch.from_numpy(np.concatenate([values[k] for k in keys]).astype(np.int64)),
            lengths=torch.from_numpy(np.concatenate([lengths[k] for k in keys]).astype(np.int32)),
        )

        # Dense, in group order. Member-side features are computed once per distinct (member,
        # time): a request's K candidates share them (the funnel scores thousands per request).
        parts = []
        if "member_embedding" in self.groups or "cosine" in self.groups:
            first, inverse = _distinct_pairs(m, t)
            member_vectors, _ = self.history.vectors_at(member_ids[first], t[first])
        if "post_embedding" in self.groups:
            parts.append(self.post_reduced[p])
        if "member_embedding" in self.groups:
            parts.append(project(member_vectors, self.projection)[inverse])
        if "cosine" in self.groups:
            parts.append(np.einsum("bd,bd->b", self.post_vectors[p],
                                   member_vectors[inverse])[:, None])
        if "counts" in self.groups:
            post_keys = self.post_ids[p]
            parts.append(np.column_stack([
                self.member_numeric[m],
                np.log1p(self.clicks_by_member.count_before(member_ids, t)) / 5,
                np.log1p(self.impressions_by_post.count_before(post_keys, t)) / 5,
                np.log1p(self.clicks_by_post.count_before(post_keys, t)) / 5,
            ]))
        if "context" in self.groups:
            age_weeks = np.maximum(t - self.post_created_h[p], 0.0) / (24 * 7)
            position = rows["position"].to_numpy().astype(np.float64)
            parts.append(np.column_stack([1.0 / position, age_weeks]))
        dense = torch.from_numpy(np.concatenate(parts, axis=1).astype(np.float32))
        return sparse, dense
