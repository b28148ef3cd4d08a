"""Hard negatives: texts of the same task with another label, mined lexically.

In a task-homogeneous batch the in-batch negatives are other labels' texts drawn at random,
mostly easy ones (a hockey post against a cryptography one). The negatives that teach the
boundary share the anchor's words but not its label: a baseball post for a hockey one, a
four-star review worded like a five-star one. They are mined here by TF-IDF cosine, as DPR
mines BM25 negatives (Karpukhin et al., 2020): independent of the encoder being trained, a few
seconds per task, and computed on the training split only. Each anchor's negative is drawn at
random from its `pool` most similar other-label texts rather than taken as the nearest, which
lowers the chance that a mislabelled near-duplicate is pushed away every time.
"""

from __future__ import annotations

import numpy as np


def other_label_neighbours(texts: list[str], labels: np.ndarray, pool: int,
                           chunk: int = 2048) -> np.ndarray:
    """[N, pool] row indices: for each of the N texts, the `pool` texts with another label most
    similar to it by TF-IDF cosine, most similar first; -1 fills a row where fewer exist."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    labels = np.asarray(labels)
    n = len(texts)
    if len(labels) != n:
        raise ValueError(f"other_label_neighbours: {n} texts but {len(labels)} labels")
    if pool < 1:
        raise ValueError(f"training.hard_negative_pool: must be >= 1, got {pool}")
    out = np.full((n, pool), -1, dtype=np.int64)
    if n < 2:
        return out
    x = TfidfVectorizer(sublinear_tf=True, token_pattern=r"(?u)\b\w+\b",
                        dtype=np.float32).fit_transform(texts)  # unit rows
    k = min(pool, n - 1)
    for start in range(0, n, chunk):
        sims = (x[start: start + chunk] @ x.T).toarray()
        sims[labels[start: start + chunk, None] == labels[None, :]] = -np.inf  # self, same label
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        top_sims = np.take_along_axis(sims, top, axis=1)
        order = np.argsort(-top_sims, axis=1, kind="stable")
        top, top_sims = np.take_along_axis(top, order, axis=1), np.take_along_axis(top_sims, order, axis=1)
        out[start: start + chunk, :k] = np.where(np.isfinite(top_sims), top, -1)
    return out


def draw_negatives(rng: np.random.Generator, neighbours: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """One negative row per anchor row, uniform over that row's mined neighbours. ValueError
    when an anchor has none (its split holds only its own label)."""
    candidates = neighbours[rows]
    counts = (candidates >= 0).sum(axis=1)
    if (counts == 0).any():
        raise ValueError(f"hard negatives: rows {rows[counts == 0][:5].tolist()} have no text "
                         "with another label in their split")
    pick = (rng.random(len(rows)) * counts).astype(np.int64)
    return candidates[np.arange(len(rows)), pick]
