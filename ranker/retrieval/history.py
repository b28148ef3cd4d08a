"""Point-in-time member vectors from engagement history.

A member's vector at time t is the recency-weighted mean of the vectors of posts they engaged
with *strictly before* t (weight 0.5 ** (age / halflife)), normalised. Computing it at each
impression's own time keeps the label out of the features: a training row never sees the very
click it is trained to predict (a leak that makes a ranker look good in training and
miscalibrated on new data).

Vectorised: engagements are sorted by (member, time) and their weighted vectors cumulated once;
the vector of member m at time t is a difference of two cumulative sums, at the block of m's
engagements before t that `PointInTimeEvents` finds by binary search.
Recency weighting uses 2 ** ((t_click - t_ref) / halflife): the common factor 2 ** ((t_ref - t)
/ halflife) of every weight at query time t cancels in the normalisation.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from recsim.world.timeline import hours_since_start


class PointInTimeEvents:
    """Events (key, time) sorted once by (key, time); per query (key, t), the block of the key's
    events strictly before t, found by binary search.

    The search runs on one int64 per event, key code * (U + 1) + rank of its time among the U
    distinct event times, so "strictly before t" is an exact comparison (a float composite
    key * span + time would merge times a few microseconds apart once there are many keys).

    Args:
        keys: [N] int64 event keys (a member or post id).
        t: [N] event times in hours.

    Attributes:
        order: [N] the sort: sorted event i is input row order[i].
        keys: [K] the distinct keys, sorted.
    """

    def __init__(self, keys: np.ndarray, t: np.ndarray):
        keys, t = np.asarray(keys), np.asarray(t)
        self.order = np.lexsort((t, keys))  # stable: ties keep their input order
        self.keys, codes = np.unique(keys[self.order], return_inverse=True)
        self.times = np.unique(t)  # [U] distinct event times, sorted
        self.width = len(self.times) + 1  # a query time's rank runs 0..U
        rank = np.searchsorted(self.times, t[self.order])
        self.composite = codes.astype(np.int64) * self.width + rank  # [N] sorted

    def before(self, keys: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[B] start and end (exclusive) into the sorted events: the key's events before t.

        keys: [B]; t: [B] query times in hours. Unknown keys get an empty block (end == start).
        """
        keys, t = np.asarray(keys), np.asarray(t)
        if not len(self.keys):
            zero = np.zeros(len(keys), dtype=np.int64)
            return zero, zero
        pos = np.searchsorted(self.keys, keys).clip(0, len(self.keys) - 1)
        known = self.keys[pos] == keys
        base = pos.astype(np.int64) * self.width
        start = np.searchsorted(self.composite, base, side="left")
        end = np.searchsorted(self.composite, base + np.searchsorted(self.times, t, side="left"),
                              side="left")
        return start, np.where(known, end, start)

    def count_before(self, keys: np.ndarray, t: np.ndarray) -> np.ndarray:
        """[B] number of the key's events strictly before t."""
        start, end = self.before(keys, t)
        return end - start


def last_k(start: np.ndarray, end: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Jagged indices of the last k events in each [start, end): (flat indices, [B] lengths)."""
    lo = np.maximum(start, end - k)
    lengths = end - lo
    offsets = np.cumsum(lengths) - lengths
    flat = np.arange(lengths.sum()) - np.repeat(offsets, lengths) + np.repeat(lo, lengths)
    return flat, lengths


class MemberHistory:
    """Recency-weighted member vectors from engagements strictly before a time (see the module)."""

    def __init__(self, impressions: pl.DataFrame, post_ids: np.ndarray, post_vectors: np.ndarray,
                 halflife_days: float, engagement: str = "click"):
        """
        Args:
            impressions: logged impressions (member_id, post_id, timestamp, <engagement>).
            post_ids, post_vectors: [P] ids and [P, D] unit vectors, row-aligned.
            halflife_days: recency half-life of an engagement's weight.
            engagement: the boolean outcome column that counts as engagement.
        """
        order = np.argsort(post_ids)
        row_of_post = pl.DataFrame({"post_id": post_ids[order], "row": order})
        # Sorted here already, so the events' (stable) sort keeps this order and ties in
        # (member, time) are summed in the same order on every run.
        engaged = (impressions.filter(pl.col(engagement))
                   .select("member_id", "post_id", t=hours_since_start(pl.col("timestamp")))
                   .join(row_of_post, on="post_id")
                   .sort(["member_id", "t"]))
        self.events = PointInTimeEvents(engaged["member_id"].to_numpy(), engaged["t"].to_numpy())
        t = engaged["t"].to_numpy()[self.events.order]  # [N] hours, sorted by (member, time)
        self.dim = post_vectors.shape[1]
        vectors = post_vectors[engaged["row"].to_numpy()[self.events.order]].astype(np.float64)
        t_ref = t.max() if len(t) else 0.0
        weights = 2.0 ** ((t - t_ref) / (halflife_days * 24))
        self.cumsum = np.vstack([np.zeros((1, self.dim)),
                                 np.cumsum(vectors * weights[:, None], axis=0)])  # [N + 1, D]
        self.prior = vectors.mean(axis=0) if len(vectors) else post_vectors.mean(axis=0)
        self.prior /= max(np.linalg.norm(self.prior), 1e-12)

    def vectors_at(self, member_ids: np.ndarray, t_hours: np.ndarray,
                   fallback: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """[B, D] float32 vectors and [B] engagement counts, from engagements strictly before t.

        `t_hours` is [B] or a scalar. Members with no earlier engagement get row i of `fallback`
        [B, D] when given (e.g. their profile text through the post encoder), else the prior
        (mean of all engaged posts).
        """
        member_ids = np.asarray(member_ids)
        t_hours = np.broadcast_to(np.asarray(t_hours, dtype=np.float64), member_ids.shape)
        if fallback is not None:
            fallback = np.asarray(fallback, dtype=np.float64)
            if fallback.shape != (len(member_ids), self.dim):
                raise ValueError(f"fallback: expected shape ({len(member_ids)}, {self.dim}), got "
                                 f"{fallback.shape}")
            vectors = fallback.copy()
        else:
            vectors = np.tile(self.prior, (len(member_ids), 1))
        start, end = self.events.before(member_ids, t_hours)
        count = end - start
        has = count > 0
        vectors[has] = self.cumsum[end[has]] - self.cumsum[start[has]]
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True).clip(1e-12)
        return vectors.astype(np.float32), count
