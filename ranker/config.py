"""The ranker's configuration (conf/ranker/): model shape, features, training.

Kept apart from ranker/model.py (which imports TorchRec) so that config schemas and their checks
load fast; ranker/model.py re-exports it, and the configs name it there
(`_target_: ranker.model.RankerConfig`). It checks its values when built and raises ValueError
naming the key (`ranker.learning_rate: must be > 0, got 0`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from recsim.world import checks
from recsim.world.rewards import ACTIONS

INTERACTIONS = ("dlrm", "dcn")


@dataclass
class RankerConfig:
    interaction: str = "dlrm"  # dlrm (pairwise dot products) or dcn (DCN-v2 low-rank cross net)
    embedding_dim: int = 16
    dense_arch: list[int] = field(default_factory=lambda: [64])
    over_arch: list[int] = field(default_factory=lambda: [64, 32])
    dcn_num_layers: int = 2
    dcn_low_rank_dim: int = 16
    heads: list[str] = field(default_factory=lambda: list(ACTIONS))
    score_weights: dict[str, float] = field(default_factory=lambda: {"click": 1.0})
    # Features (ranker/features.py).
    recent_k: int = 20  # history group: the last K clicked posts' authors and topics
    embedding_dims: int | None = 64  # post / member embedding features reduced to this size
    embedding_projection: str = "pca"  # none, prefix (Matryoshka), pca
    # Training (ranker/train.py).
    epochs: int = 4
    batch_size: int = 512
    learning_rate: float = 3e-3
    weight_decay: float = 0.0
    train_fraction: float = 0.7  # share of the log's time window used for training (the rest tests)
    validation_fraction: float = 0.15  # last share of the training window: early stopping
    evals_per_epoch: int = 2
    patience: int = 2  # evaluations without a better validation loss before stopping
    num_threads: int | None = 1  # torch intra-op threads while training (small batches: 1 is
    #                              fastest, and does not spin against other processes' cores)

    def __post_init__(self):
        from ranker.features import PROJECTIONS  # TorchRec: imported when a config is built

        if self.interaction not in INTERACTIONS:
            raise ValueError(f"ranker.interaction: unknown '{self.interaction}'; "
                             f"choose from {list(INTERACTIONS)}")
        unknown = [h for h in [*self.heads, *self.score_weights] if h not in ACTIONS]
        if unknown:
            raise ValueError(f"ranker.heads / ranker.score_weights: unknown head(s) {unknown}; "
                             f"choose from {list(ACTIONS)}")
        missing = [h for h in self.score_weights if h not in self.heads]
        if missing or not self.score_weights:
            raise ValueError(f"ranker.score_weights: {missing or 'none'} not among the model's "
                             f"heads {self.heads}; the score needs at least one head")
        if "click" not in self.heads:
            raise ValueError("ranker.heads: the click head is required (policies and the DM "
                             "estimators use its predictions)")
        if len(set(self.heads)) != len(self.heads):
            raise ValueError(f"ranker.heads: a head is listed twice in {self.heads}")
        for head, weight in self.score_weights.items():
            checks.at_least(f"ranker.score_weights.{head}", weight, 0)
        if not sum(self.score_weights.values()) > 0:
            raise ValueError(f"ranker.score_weights: the ranking score is their weighted sum of head "
                             f"probabilities; at least one weight must be > 0, got {self.score_weights}")
        checks.at_least("ranker.embedding_dim", self.embedding_dim, 1)
        checks.all_at_least("ranker.dense_arch", self.dense_arch, 1, nonempty=False)
        checks.all_at_least("ranker.over_arch", self.over_arch, 1, nonempty=False)
        checks.at_least("ranker.dcn_num_layers", self.dcn_num_layers, 1)
        checks.at_least("ranker.dcn_low_rank_dim", self.dcn_low_rank_dim, 1)
        checks.at_least("ranker.recent_k", self.recent_k, 1)
        checks.at_least("ranker.embedding_dims", self.embedding_dims, 1, optional=True)
        checks.one_of("ranker.embedding_projection", self.embedding_projection, PROJECTIONS)
        checks.at_least("ranker.epochs", self.epochs, 1)
        checks.at_least("ranker.batch_size", self.batch_size, 1)
        checks.positive("ranker.learning_rate", self.learning_rate)
        checks.at_least("ranker.weight_decay", self.weight_decay, 0)
        checks.between("ranker.train_fraction", self.train_fraction, 0, 1, open_low=True, open_high=True)
        checks.between("ranker.validation_fraction", self.validation_fraction, 0, 1, open_high=True)
        checks.at_least("ranker.evals_per_epoch", self.evals_per_epoch, 1)
        checks.at_least("ranker.patience", self.patience, 1)
        checks.at_least("ranker.num_threads", self.num_threads, 1, optional=True)
