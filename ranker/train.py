"""Train the multi-task ranker on logged impressions; metrics per head; checkpoints; scoring.

    train(space, train_rows, test_rows, cfg, seed)  -> (model, RankerMetrics)
    predict(model, space, rows)                      -> [N, H] logits
    save_checkpoint(model, path) / load_checkpoint(path, space)

Training rows are split in time: the last `validation_fraction` of the training window is the
validation set for early stopping (the model with the best validation loss is kept); the
evaluation period (`test_rows`, after the training window) gives the reported metrics.
Metrics per head: AUC (torchmetrics), log loss, normalized entropy and calibration (torchrec.metrics
states: NE = the model's cross entropy / the base rate's; calibration = sum of predictions / sum
of labels, 1 is calibrated) and expected calibration error (torchmetrics, 15 bins).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import torch
from torchmetrics.functional.classification import binary_auroc, binary_calibration_error
from torchrec.metrics.calibration import compute_calibration, get_calibration_states
from torchrec.metrics.ne import compute_logloss, compute_ne, get_ne_states
from tqdm.auto import tqdm

from ranker.features import FeatureSpace
from ranker.model import MultiTaskRanker, RankerConfig
from recsim.world.timeline import time_split

log = logging.getLogger(__name__)
ETA = 1e-12


@dataclass
class RankerMetrics:
    auc: float  # the click head's metrics on the evaluation period (what the report leads with)
    log_loss: float
    normalized_entropy: float  # log loss / entropy of the base rate; < 1 beats the base rate
    calibration: float
    heads: dict[str, dict[str, float]] = field(default_factory=dict)  # head -> metrics
    n_train: int = 0
    n_validation: int = 0
    n_eval: int = 0
    steps: int = 0
    best_step: int = 0
    stopped_early: bool = False


def validation_split(rows: pl.DataFrame, validation_fraction: float
                     ) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(fit, validation): the last `validation_fraction` of the training window validates.

    The log's one time split (recsim.world.timeline.time_split), except that no validation
    share means no validation rows: time_split at fraction 1 would still hold out the rows at
    the latest timestamp.
    """
    fraction = 1.0 - validation_fraction
    if fraction >= 1.0:
        return rows, rows.clear()
    fit, validation, _ = time_split(rows, fraction)
    return fit, validation


def predict(model: MultiTaskRanker, space: FeatureSpace, rows: pl.DataFrame,
            batch_size: int = 8192, seconds: dict | None = None) -> np.ndarray:
    """[N, H] logits for rows (member_id, post_id, position, timestamp). `seconds`, when given,
    gains the time spent building features and in the model's forward pass."""
    model.eval()
    out, t_features, t_forward = [], 0.0, 0.0
    with torch.inference_mode():
        for start in range(0, rows.height, batch_size):
            t0 = time.perf_counter()
            batch = space.build_batch(rows.slice(start, batch_size))
            t1 = time.perf_counter()
            out.append(model(*batch).numpy())
            t_features, t_forward = t_features + t1 - t0, t_forward + time.perf_counter() - t1
    if seconds is not None:
        seconds["features"] = seconds.get("features", 0.0) + t_features
        seconds["forward"] = seconds.get("forward", 0.0) + t_forward
    return np.concatenate(out) if out else np.empty((0, len(model.heads)), dtype=np.float32)


def score(model: MultiTaskRanker, space: FeatureSpace, rows: pl.DataFrame) -> np.ndarray:
    """[N] ranking scores: the weighted sum of the heads' probabilities."""
    return model.ranking_score(torch.from_numpy(predict(model, space, rows))).numpy()


def _labels(rows: pl.DataFrame, heads: list[str]) -> torch.Tensor:
    return torch.from_numpy(rows.select(heads).to_numpy().astype(np.float32))


def head_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """AUC, log loss (nats), NE, calibration and ECE of one head's [N] logits and 0/1 labels."""
    probs = torch.sigmoid(logits.double())
    states = get_ne_states(labels.double(), probs, torch.ones_like(probs), ETA)
    ne = compute_ne(states["cross_entropy_sum"], states["weighted_num_samples"],
                    states["pos_labels"], states["neg_labels"], ETA)
    bits = compute_logloss(states["cross_entropy_sum"], states["pos_labels"],
                           states["neg_labels"], ETA)
    cal = get_calibration_states(labels.double(), probs, torch.ones_like(probs))
    positives = int(labels.sum())
    return {
        "auc": float(binary_auroc(probs, labels.int())) if 0 < positives < len(labels) else float("nan"),
        "log_loss": float(bits) * math.log(2),  # torchrec's cross entropy is in bits
        "normalized_entropy": float(ne),
        "calibration": float(compute_calibration(cal["calibration_num"], cal["calibration_denom"])),
        "ece": float(binary_calibration_error(probs.float(), labels.int(), n_bins=15)),
        "base_rate": positives / max(len(labels), 1),
        "positives": positives,
    }


def evaluate(model: MultiTaskRanker, space: FeatureSpace, rows: pl.DataFrame) -> dict[str, dict]:
    """Head -> metrics on `rows`."""
    logits = torch.from_numpy(predict(model, space, rows))
    labels = _labels(rows, model.heads)
    return {h: head_metrics(logits[:, i], labels[:, i]) for i, h in enumerate(model.heads)}


def _loss(model, space, rows) -> torch.Tensor:
    sparse, dense = space.build_batch(rows)
    return torch.nn.functional.binary_cross_entropy_with_logits(
        model(sparse, dense), _labels(rows, model.heads), reduction="none").mean(0).sum()


def _validation_loss(model, space, rows: pl.DataFrame) -> float:
    logits = torch.from_numpy(predict(model, space, rows))
    return float(torch.nn.functional.binary_cross_entropy_with_logits(
        logits, _labels(rows, model.heads), reduction="none").mean(0).sum())


def train(space: FeatureSpace, train_rows: pl.DataFrame, test_rows: pl.DataFrame,
          cfg: RankerConfig, seed: int, name: str = "ranker",
          progress: bool = True) -> tuple[MultiTaskRanker, RankerMetrics]:
    """Adam on the sum of the heads' binary cross-entropies, early stopping on the validation
    loss (the last `cfg.validation_fraction` of the training window); deterministic in `seed`."""
    threads = torch.get_num_threads()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    try:
        return _train(space, train_rows, test_rows, cfg, seed, name, progress)
    finally:
        torch.set_num_threads(threads)


def _train(space, train_rows, test_rows, cfg, seed, name, progress):
    torch.manual_seed(seed)
    model = MultiTaskRanker(space, cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(seed)
    fit_rows, val_rows = validation_split(train_rows, cfg.validation_fraction)
    n = fit_rows.height
    # Start each head at its base rate (the heads are rare: share is ~1%), so the first steps
    # learn ranking rather than the bias.
    rate = _labels(fit_rows, model.heads).mean(0).clamp(1e-4, 1 - 1e-4)
    with torch.no_grad():
        model.output_layer().bias.copy_(torch.log(rate / (1 - rate)))
    per_epoch = (n + cfg.batch_size - 1) // cfg.batch_size
    eval_every = max(per_epoch // max(cfg.evals_per_epoch, 1), 1)
    best = (math.inf, 0, None)  # (validation loss, step, state dict)
    step, waited, stopped = 0, 0, False
    with tqdm(total=cfg.epochs * per_epoch, desc=f"training {name}", unit="step",
              mininterval=2.0, disable=not progress) as bar:
        for _ in range(cfg.epochs):
            order = rng.permutation(n)
            for start in range(0, n, cfg.batch_size):
                model.train()
                loss = _loss(model, space, fit_rows[order[start: start + cfg.batch_size]])
                opt.zero_grad()
                loss.backward()
                opt.step()
                step += 1
                bar.update(1)
                if val_rows.height and (step % eval_every == 0 or step == cfg.epochs * per_epoch):
                    val = _validation_loss(model, space, val_rows)
                    bar.set_postfix(val_loss=f"{val:.4f}")
                    if val < best[0] - 1e-5:
                        best, waited = (val, step, copy.deepcopy(model.state_dict())), 0
                    else:
                        waited += 1
                        stopped = waited >= cfg.patience
                if stopped:
                    break
            if stopped:
                break
    if best[2] is not None:
        model.load_state_dict(best[2])
    heads = evaluate(model, space, test_rows)
    click = heads["click"]
    log.info("%s: %d steps (best %d%s); on %d held-out impressions: %s", name, step, best[1],
             ", stopped early" if stopped else "", test_rows.height,
             "; ".join(f"{h} AUC {m['auc']:.4f} NE {m['normalized_entropy']:.4f}"
                       for h, m in heads.items()))
    return model, RankerMetrics(click["auc"], click["log_loss"], click["normalized_entropy"],
                                click["calibration"], heads, n, val_rows.height, test_rows.height,
                                step, best[1], stopped)


def save_checkpoint(model: MultiTaskRanker, path: str | Path) -> Path:
    """Weights and the plain-data description of the model (loads with weights_only=True)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"meta": model.meta, "state_dict": model.state_dict()}, path)
    return path


def load_checkpoint(path: str | Path, space: FeatureSpace) -> MultiTaskRanker:
    """Rebuild the model for `space` and load its weights; the space must match the saved one."""
    saved = torch.load(path, weights_only=True)
    meta = saved["meta"]
    if list(space.groups) != meta["groups"] or space.dense_dim != meta["dense_dim"]:
        raise ValueError(f"{path}: saved for feature groups {meta['groups']} (dense dim "
                         f"{meta['dense_dim']}), not {list(space.groups)} ({space.dense_dim})")
    model = MultiTaskRanker(space, RankerConfig(**meta["config"]))
    model.load_state_dict(saved["state_dict"])
    model.eval()
    return model


# --- the run's ranker step -------------------------------------------------------------------

@dataclass
class Scores:
    """A ranker's view of candidate rows: what the policy ranks by, and the click head."""

    score: np.ndarray  # [N] log of the ranking score (weighted heads' probabilities)
    click_prob: np.ndarray  # [N] float64 click probability (the click head)
    seconds: dict = field(default_factory=dict)  # features, forward


def score_candidates(model: MultiTaskRanker, space: FeatureSpace, rows: pl.DataFrame) -> Scores:
    """Score rows (request_id, member_id, post_id, position, timestamp) in batches."""
    seconds: dict = {}
    logits = torch.from_numpy(predict(model, space, rows, seconds=seconds))
    return Scores(score=model.ranking_score(logits).clamp_min(1e-12).log().numpy(),
                  click_prob=torch.sigmoid(logits[:, model.heads.index("click")]).numpy()
                  .astype(np.float64), seconds=seconds)


@dataclass
class TrainedRanker:
    model: MultiTaskRanker
    space: FeatureSpace
    metrics: RankerMetrics
    checkpoint: Path

    def score(self, rows: pl.DataFrame) -> Scores:
        return score_candidates(self.model, self.space, rows)


def fit_ranker(features: list[str], posts: pl.DataFrame, post_vectors: np.ndarray,
               members: pl.DataFrame, history, impressions: pl.DataFrame,
               train_rows: pl.DataFrame, test_rows: pl.DataFrame, cfg: RankerConfig, seed: int,
               name: str, checkpoint: str | Path) -> TrainedRanker:
    """Build the feature space of `features`, train on `train_rows`, measure on `test_rows`,
    and save the checkpoint. `history` is the MemberHistory over `post_vectors`."""
    space = FeatureSpace.build(features, posts, post_vectors, members, history, impressions,
                               recent_k=cfg.recent_k, embedding_dims=cfg.embedding_dims,
                               embedding_projection=cfg.embedding_projection)
    model, metrics = train(space, train_rows, test_rows, cfg, seed, name=name)
    return TrainedRanker(model, space, metrics, save_checkpoint(model, checkpoint))
