"""Fine content topics read from the post texts: the truth of the text world (world.affinity=topics).

The default world's user model sees a post's content only through one coarse topic label, so an
embedding can at best recover that label. With `affinity: topics` a member's affinity to a post
reads its text, through a classical topic model fitted on the corpus alone (no encoder compared
in an A/B takes part, so none is favoured by construction):

    1. post_topic_mixtures  TF-IDF of the post texts -> NMF with K components (sklearn, seeded);
                            each post's row of the factor, normalised, is its mixture over the K
                            fine topics [P, K]. Cached on disk per corpus (the fit takes ~20 s
                            for the 9k-post corpus on 2 cores; LDA took ~50 s for similar topics).
    2. member_preferences   [N, K] a Dirichlet draw per member around their label interests
                            carried to fine topics (interests @ each label's mean mixture): who
                            likes finance likes finance's fine topics, but which ones is theirs.
    3. affinity_scale       (shift, scale) that give pref . mix the mean and standard deviation
                            of the label world's affinity over all (member, post) pairs, so
                            topic_weight and the actions' affinity terms keep their size.
    4. pair_dot             pref[m] . mix[p] for index arrays of any (broadcastable) shapes.

`fine_truth` runs 1-3 for build_world (recsim/world/world.py).

Shape legend: N members, P posts, T coarse topics (corpus.TOPICS), K fine topics.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from recsim.paths import CACHE_DIR

if TYPE_CHECKING:
    import polars as pl

    from recsim.world.world import WorldConfig

log = logging.getLogger(__name__)

_VERSION = "tfidf-nmf-1"  # part of the cache key: change it when the fit below changes
FIT_SEED = 0  # the topic model is a function of the corpus alone, whatever the world's seed
_VECTORIZER = {"stop_words": "english", "token_pattern": r"(?u)\b[^\W\d_]{3,}\b", "min_df": 5,
               "max_df": 0.5, "max_features": 10_000, "sublinear_tf": True}


def _cache_key(post_ids: np.ndarray, texts: list[str], n_topics: int, seed: int) -> str:
    h = hashlib.sha256(f"{_VERSION}|{n_topics}|{seed}|{sorted(_VECTORIZER.items())}".encode())
    h.update(np.asarray(post_ids, dtype=np.int64).tobytes())
    for text in texts:
        h.update(text.encode("utf-8", "replace") + b"\0")
    return h.hexdigest()[:20]


def fit_topic_mixtures(texts: list[str], n_topics: int, seed: int) -> np.ndarray:
    """[P, K] each text's mixture over K fine topics (rows sum to 1), from TF-IDF + NMF.

    A text with no word of the vocabulary (or a zero row of the factor) gets the uniform mixture.
    """
    from sklearn.decomposition import NMF
    from sklearn.feature_extraction.text import TfidfVectorizer

    min_df = min(_VECTORIZER["min_df"], max(len(texts) // 100, 1))  # tiny corpora (tests)
    tfidf = TfidfVectorizer(**{**_VECTORIZER, "min_df": min_df}).fit_transform(texts)
    if tfidf.shape[1] < n_topics:
        raise ValueError(f"world.n_fine_topics: {n_topics} topics but the corpus vocabulary has "
                         f"only {tfidf.shape[1]} words; lower it or use a larger corpus")
    weights = NMF(n_components=n_topics, init="nndsvda", random_state=seed,
                  max_iter=300).fit_transform(tfidf)
    total = weights.sum(axis=1, keepdims=True)
    empty = total[:, 0] <= 0
    if empty.any():
        log.info("topics: %d of %d posts have no topic weight; given the uniform mixture",
                 int(empty.sum()), len(texts))
    return np.where(empty[:, None], 1.0 / n_topics, weights / np.where(empty[:, None], 1.0, total))


def post_topic_mixtures(post_ids: np.ndarray, texts: list[str], n_topics: int, seed: int,
                        cache_dir: Path | None) -> np.ndarray:
    """`fit_topic_mixtures`, read from / written to `cache_dir` (None: no cache) by a key over
    the fit's settings and every (post_id, text)."""
    if len(post_ids) != len(texts):
        raise ValueError(f"topics: {len(post_ids)} post ids but {len(texts)} texts")
    path = None if cache_dir is None else (
        Path(cache_dir) / f"{_cache_key(post_ids, texts, n_topics, seed)}.npz")
    if path is not None and path.exists():
        with np.load(path) as cached:
            if np.array_equal(cached["post_ids"], post_ids):
                return cached["mixture"]
    mixture = fit_topic_mixtures(texts, n_topics, seed)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".npz")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, post_ids=np.asarray(post_ids), mixture=mixture)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the shared cache from other users
        os.replace(tmp, path)
    return mixture


def member_preferences(interests: np.ndarray, post_topic: np.ndarray, mixture: np.ndarray,
                       concentration: float, rng: np.random.Generator) -> np.ndarray:
    """[N, K] member preferences over fine topics (rows sum to 1).

    Args:
        interests: [N, T] label interests; post_topic: [P] label index; mixture: [P, K].
        concentration: mean Dirichlet parameter per fine topic; small = members focused on a
            few fine topics (as world.interest_concentration for labels).
    Each member's draw is Dirichlet(concentration * K * interests @ label_mix), label_mix [T, K]
    the mean mixture of each label's posts (uniform for a label without posts), so its mean is
    the member's label interests carried to fine topics.
    """
    n_labels, n_topics = interests.shape[1], mixture.shape[1]
    counts = np.bincount(post_topic, minlength=n_labels).astype(np.float64)
    sums = np.zeros((n_labels, n_topics))
    np.add.at(sums, post_topic, mixture)
    label_mix = np.where(counts[:, None] > 0, sums / np.maximum(counts[:, None], 1.0),
                         1.0 / n_topics)
    alpha = concentration * n_topics * (interests @ label_mix)
    # Gamma draws, then normalised: numpy's dirichlet takes one alpha vector, not one per row.
    draws = rng.standard_gamma(np.maximum(alpha, 1e-6))
    total = draws.sum(axis=1, keepdims=True)
    return np.where(total > 0, draws / np.where(total > 0, total, 1.0), 1.0 / n_topics)


def affinity_scale(interests: np.ndarray, post_topic: np.ndarray, preferences: np.ndarray,
                   mixture: np.ndarray) -> tuple[float, float]:
    """(shift, scale): shift + scale * pref[m] . mix[p] has, over every (member, post) pair, the
    mean and standard deviation of the label affinity interests[m, post_topic[p]]."""
    share = np.bincount(post_topic, minlength=interests.shape[1]) / len(post_topic)
    label_mean = share @ interests.mean(axis=0)
    label_var = share @ (interests**2).mean(axis=0) - label_mean**2
    raw_mean = preferences.mean(axis=0) @ mixture.mean(axis=0)
    second = np.sum((preferences.T @ preferences / len(preferences))
                    * (mixture.T @ mixture / len(mixture)))
    raw_var = second - raw_mean**2
    if not raw_var > 0:
        raise ValueError("topics: the fine affinity does not vary over (member, post) pairs")
    scale = float(np.sqrt(max(label_var, 0.0) / raw_var))
    return float(label_mean - scale * raw_mean), scale


def pair_dot(a: np.ndarray, b: np.ndarray, rows_a: np.ndarray, rows_b: np.ndarray,
             chunk: int = 1 << 17) -> np.ndarray:
    """a[rows_a] . b[rows_b] along the last axis, for index arrays of broadcastable shapes,
    in chunks (a [R, S, C] request grid would not fit in memory times K)."""
    ra, rb = np.broadcast_arrays(np.asarray(rows_a), np.asarray(rows_b))
    flat_a, flat_b = ra.ravel(), rb.ravel()
    out = np.empty(flat_a.shape, dtype=np.float64)
    for start in range(0, len(out), chunk):
        part = slice(start, start + chunk)
        out[part] = np.einsum("ik,ik->i", a[flat_a[part]], b[flat_b[part]])
    return out.reshape(ra.shape)


def fine_truth(cfg: WorldConfig, posts: pl.DataFrame, interests: np.ndarray,
               post_topic: np.ndarray, cache_dir: Path | None = CACHE_DIR / "world_topics") -> dict:
    """The text world's truth, as UserModel fields: fine_pref [N, K], post_fine [P, K] (rows
    of `posts` in order) and fine_affine (shift, scale).

    The preferences come from their own generator (seeded by cfg.seed), so every other draw of
    the world is the label world's: same members, requests and candidates, other slates.
    """
    mixture = post_topic_mixtures(posts["post_id"].to_numpy(), posts["text"].to_list(),
                                  cfg.n_fine_topics, FIT_SEED, cache_dir)
    rng = np.random.default_rng([cfg.seed, 1])
    pref = member_preferences(interests, post_topic, mixture, cfg.fine_concentration, rng)
    return {"fine_pref": pref, "post_fine": mixture,
            "fine_affine": affinity_scale(interests, post_topic, pref, mixture)}
