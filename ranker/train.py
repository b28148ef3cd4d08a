"""Train the click model on logged impressions; evaluate AUC and log loss; score candidates."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import polars as pl
import torch
from torchmetrics.functional.classification import binary_auroc
from tqdm.auto import tqdm

from ranker.features import FeatureSpace
from ranker.model import ClickModel, RankerConfig

log = logging.getLogger(__name__)


@dataclass
class RankerMetrics:
    auc: float
    log_loss: float
    normalized_entropy: float  # log loss / entropy of the base rate; < 1 beats the base rate
    n_train: int
    n_eval: int


def score(model: ClickModel, space: FeatureSpace, rows: pl.DataFrame,
          batch_size: int = 8192) -> np.ndarray:
    """Click logits for rows (member_id, post_id, position, timestamp)."""
    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, rows.height, batch_size):
            out.append(model(*space.build_batch(rows.slice(start, batch_size))).numpy())
    return np.concatenate(out) if out else np.empty(0, dtype=np.float32)


def evaluate(model: ClickModel, space: FeatureSpace, rows: pl.DataFrame) -> tuple[float, float, float]:
    logits = torch.from_numpy(score(model, space, rows))
    labels = torch.from_numpy(rows["click"].to_numpy()).float()
    auc = float(binary_auroc(torch.sigmoid(logits), labels.int()))
    loss = float(torch.nn.functional.binary_cross_entropy_with_logits(logits, labels))
    p = float(labels.mean().clamp(1e-6, 1 - 1e-6))
    base = -(p * np.log(p) + (1 - p) * np.log(1 - p))
    return auc, loss, loss / base


def train(space: FeatureSpace, train_rows: pl.DataFrame, eval_rows: pl.DataFrame,
          cfg: RankerConfig, seed: int, name: str = "ranker") -> tuple[ClickModel, RankerMetrics]:
    """Adam on binary cross-entropy of clicks; deterministic in `seed`."""
    torch.manual_seed(seed)
    model = ClickModel(space, cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
    rng = np.random.default_rng(seed)
    n = train_rows.height
    steps = cfg.epochs * ((n + cfg.batch_size - 1) // cfg.batch_size)
    with tqdm(total=steps, desc=f"training {name}", unit="step", mininterval=2.0) as bar:
        for _ in range(cfg.epochs):
            model.train()
            order = rng.permutation(n)
            for start in range(0, n, cfg.batch_size):
                batch = train_rows[order[start: start + cfg.batch_size]]
                sparse, dense = space.build_batch(batch)
                labels = torch.from_numpy(batch["click"].to_numpy()).float()
                loss = torch.nn.functional.binary_cross_entropy_with_logits(model(sparse, dense), labels)
                opt.zero_grad()
                loss.backward()
                opt.step()
                bar.update(1)
    auc, log_loss, ne = evaluate(model, space, eval_rows)
    log.info("%s: AUC %.4f, log loss %.4f, NE %.4f on %d held-out impressions", name, auc,
             log_loss, ne, eval_rows.height)
    return model, RankerMetrics(auc, log_loss, ne, n, eval_rows.height)
