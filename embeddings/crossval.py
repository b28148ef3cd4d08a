"""Cross-validated encoder comparisons: folds shared across tasks, per-text predictions, and
paired bootstrap intervals of model differences.

The one home of the method both encoder studies use (the multilingual study,
embeddings/multilingual.py and recsim/jobs/multilingual.py; the English LiPost comparison,
embeddings/lipost.py and recsim/jobs/finetune.py):

1. every labelled text falls in one of k folds by a hash of the text (`fold_of`), the same fold
   in every task, so a text held out of one task is never trained on through another;
2. per fold, a model trained on the other folds predicts the fold's texts (`fold_view`,
   `fold_predictions`: kNN against a sample of the other folds' texts, rank of the true label's
   description), so every text is predicted once, by a model that never trained on it;
3. two models' per-text results are compared with a paired bootstrap over texts
   (`paired_bootstrap`), which keeps the pairing that makes the difference precise.
"""

from __future__ import annotations

import hashlib

import numpy as np
import polars as pl

from embeddings.evaluate import (EvalConfig, embed_all, eval_dims, knn_predict, label_ranks,
                                 sample_rows, truncate)
from embeddings.tasks import Task


# --- folds ------------------------------------------------------------------------------------

def text_hash(text: str, seed: int) -> int:
    return int.from_bytes(hashlib.sha1(f"{seed}:{text}".encode()).digest()[:8], "little")


def fold_of(text: str, k: int, seed: int) -> int:
    return text_hash(text, seed) % k


def fold_view(task: Task, fold: int, k: int, seed: int, validation_share: int = 10,
              max_test: int | None = None) -> Task:
    """`task` with every labelled text redistributed: test = the texts of `fold`; validation =
    one in `validation_share` of the others (by hash; only a loss figure during training);
    train = the rest. The corpus's own splits are pooled first.

    `max_test` keeps only that many of the fold's texts as test texts (those first in a second
    hash order, the same order in every task), to bound the cost of evaluating a large task; the
    fold's other texts are left out of training all the same."""
    rows = pl.concat([task.splits[s] for s in ("train", "validation", "test")]).unique(
        "text", keep="first", maintain_order=True)
    h = pl.Series([text_hash(t, seed) for t in rows["text"]], dtype=pl.UInt64)
    in_fold = (h % k) == fold
    validation = ~in_fold & (((h // k) % validation_share) == 0)
    test = rows.filter(in_fold)
    if max_test is not None and test.height > max_test:
        order = np.argsort([text_hash(t, seed + 1) for t in test["text"]], kind="stable")
        test = test[np.sort(order[:max_test])]
    return Task(task.name, task.labels, task.descriptions,
                {"test": test, "validation": rows.filter(validation),
                 "train": rows.filter(~in_fold & ~validation)})


# --- per-fold predictions ---------------------------------------------------------------------

class TextVectors:
    """Unit vectors of a set of texts, looked up by text."""

    def __init__(self, texts: list[str], vectors: np.ndarray):
        self.row = {t: i for i, t in enumerate(texts)}
        self.vectors = vectors

    @classmethod
    def embed(cls, encoder, texts, batch_size: int) -> TextVectors:
        unique = list(dict.fromkeys(texts))  # each text embedded once
        return cls(unique, embed_all(encoder, unique, batch_size))

    def __call__(self, texts, dim: int | None = None) -> np.ndarray:
        v = self.vectors[[self.row[t] for t in texts]]
        return truncate(v, dim) if dim is not None and dim < v.shape[1] else v


def support_set(task: Task, cfg: EvalConfig) -> pl.DataFrame:
    """The kNN neighbours: a seeded sample of `n_support` training texts (the same for every model)."""
    return sample_rows(task.splits["train"], cfg.n_support, cfg.seed)


def eval_texts(views: dict[str, Task], cfg: EvalConfig) -> list[str]:
    """Every text `fold_predictions` looks up for `views`: test texts, neighbours, descriptions."""
    texts = []
    for task in views.values():
        texts += task.splits["test"]["text"].to_list() + support_set(task, cfg)["text"].to_list()
        texts += task.descriptions
    return texts


def fold_predictions(vectors: TextVectors, views: dict[str, Task], cfg: EvalConfig) -> pl.DataFrame:
    """One row per (task, test text, dim): label, kNN prediction, rank of the true label."""
    frames = []
    for name, task in views.items():
        support, test = support_set(task, cfg), task.splits["test"]
        y_s, y_t = support["label_index"].to_numpy(), test["label_index"].to_numpy()
        for dim in eval_dims(cfg, vectors.vectors.shape[1]):
            t = vectors(test["text"], dim)
            pred = knn_predict(t, vectors(support["text"], dim), y_s, len(task.labels), cfg.knn_k)
            ranks = label_ranks(t, vectors(task.descriptions, dim), y_t)
            frames.append(pl.DataFrame({"task": name, "dim": dim, "text": test["text"],
                                        "label": y_t, "pred": pred, "rank": ranks}))
    return pl.concat(frames)


# --- paired differences -----------------------------------------------------------------------

def paired_bootstrap(a: np.ndarray, b: np.ndarray, n_boot: int, seed: int,
                     alpha: float = 0.05) -> tuple[float, float, float]:
    """mean(a - b) and its percentile interval, resampling the paired items."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), (n_boot, len(diff)))].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(diff.mean()), float(lo), float(hi)
