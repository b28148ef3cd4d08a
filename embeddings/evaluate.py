"""Per-task evaluation of an encoder on the tasks' test splits.

For each task and each Matryoshka dimension:

    knn_accuracy, knn_macro_f1   k-nearest-neighbour classification of test texts against a
                                 sample of training texts (cosine, similarity-weighted vote)
    mrr, recall@k                text -> label retrieval: rank of the true label's description
                                 among all label descriptions of the task
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl
from sklearn.metrics import f1_score

from embeddings.encoder import Encoder, embed_batch
from embeddings.tasks import Task
from recsim.world import checks


@dataclass
class EvalConfig:
    n_support: int = 600  # training texts per task used as kNN neighbours
    n_test: int = 300  # test texts per task
    knn_k: int = 10
    recall_at: list[int] = field(default_factory=lambda: [1, 3])
    dims: list[int] = field(default_factory=lambda: [384, 128, 64, 50])
    batch_size: int = 64
    seed: int = 0

    def __post_init__(self):
        checks.at_least("evaluation.n_support", self.n_support, 1)
        checks.at_least("evaluation.n_test", self.n_test, 1)
        checks.at_least("evaluation.knn_k", self.knn_k, 1)
        checks.all_at_least("evaluation.recall_at", self.recall_at, 1)
        checks.all_at_least("evaluation.dims", self.dims, 1)
        checks.at_least("evaluation.batch_size", self.batch_size, 1)


def embed_all(encoder: Encoder, texts: list[str], batch_size: int) -> np.ndarray:
    order = np.argsort([-len(t) for t in texts], kind="stable")  # similar lengths per batch
    out = np.empty((len(texts), encoder.model.config.hidden_size), dtype=np.float32)
    for i in range(0, len(texts), batch_size):
        rows = order[i: i + batch_size]
        out[rows] = embed_batch(encoder, [texts[j] for j in rows])
    return out


def truncate(vectors: np.ndarray, dim: int) -> np.ndarray:
    """The first `dim` coordinates, renormalised (a Matryoshka prefix)."""
    v = vectors[:, :dim]
    return v / np.linalg.norm(v, axis=1, keepdims=True).clip(1e-12)


def knn_predict(test: np.ndarray, support: np.ndarray, support_labels: np.ndarray,
                n_labels: int, k: int, leave_one_out: bool = False) -> np.ndarray:
    """Similarity-weighted vote of the k most similar support vectors (unit vectors).
    leave_one_out: `test` is `support`, and no vector votes for itself."""
    sims = test @ support.T
    if leave_one_out:
        if test.shape[0] != support.shape[0]:
            raise ValueError("knn_predict: leave_one_out needs test to be the support set")
        np.fill_diagonal(sims, -np.inf)
        k = min(k, support.shape[0] - 1)
    k = min(k, support.shape[0])
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    votes = np.zeros((test.shape[0], n_labels))
    np.add.at(votes, (np.arange(test.shape[0])[:, None], support_labels[top]),
              np.take_along_axis(sims, top, axis=1))
    return votes.argmax(axis=1)


def label_ranks(test: np.ndarray, label_vectors: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """1-based rank of each test text's true label among all labels, by cosine."""
    sims = test @ label_vectors.T
    true = sims[np.arange(len(labels)), labels]
    return 1 + (sims > true[:, None]).sum(axis=1)


def evaluate(encoder: Encoder, tasks: dict[str, Task], cfg: EvalConfig, model_name: str) -> pl.DataFrame:
    """One row per (task, dim): model, task, dim, knn_accuracy, knn_macro_f1, mrr, recall@k."""
    rows = []
    for name, task in tasks.items():
        support = sample_rows(task.splits["train"], cfg.n_support, cfg.seed)
        test = sample_rows(task.splits["test"], cfg.n_test, cfg.seed)
        texts = support["text"].to_list() + test["text"].to_list() + task.descriptions
        vectors = embed_all(encoder, texts, cfg.batch_size)
        n_s, n_t = support.height, test.height
        y_s, y_t = support["label_index"].to_numpy(), test["label_index"].to_numpy()
        for dim in eval_dims(cfg, vectors.shape[1]):
            v = truncate(vectors, dim)
            pred = knn_predict(v[n_s: n_s + n_t], v[:n_s], y_s, len(task.labels), cfg.knn_k)
            ranks = label_ranks(v[n_s: n_s + n_t], v[n_s + n_t:], y_t)
            row = {"model": model_name, "task": name, "dim": dim,
                   "knn_accuracy": float((pred == y_t).mean()),
                   "knn_macro_f1": float(f1_score(y_t, pred, average="macro")),
                   "mrr": float((1.0 / ranks).mean())}
            row.update({f"recall@{k}": float((ranks <= k).mean()) for k in cfg.recall_at})
            rows.append(row)
    return pl.DataFrame(rows)


def eval_dims(cfg: EvalConfig, full: int) -> list[int]:
    """The dimensions to evaluate, largest first: cfg.dims up to `full`, and `full` itself."""
    return sorted({d for d in cfg.dims if d <= full} | {full}, reverse=True)


def sample_rows(frame: pl.DataFrame, n: int, seed: int) -> pl.DataFrame:
    """A seeded sample of `n` rows (all of them when there are fewer)."""
    return frame.sample(n, seed=seed) if frame.height > n else frame
