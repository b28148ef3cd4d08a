"""The ranking model: TorchRec's DLRM over the feature space of ranker/features.py.

Sparse ids go as a KeyedJaggedTensor through an EmbeddingBagCollection (one table per sparse
key); dense features (post and member embeddings, their cosine, context) through DLRM's dense
arch; pairwise interactions and the over arch give one click logit per row.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor
from torchrec.models.dlrm import DLRM

from ranker.features import SPARSE_KEYS, FeatureSpace


@dataclass
class RankerConfig:
    embedding_dim: int = 16
    dense_arch: list[int] = field(default_factory=lambda: [64])
    over_arch: list[int] = field(default_factory=lambda: [64, 32])
    epochs: int = 1
    batch_size: int = 512
    learning_rate: float = 3e-3
    train_fraction: float = 0.7  # share of the log's time window used for training


class ClickModel(torch.nn.Module):
    """DLRM returning one logit per row.

    Example::

        model = ClickModel(space, RankerConfig())
        logits = model(*space.build_batch(rows))   # [B]
    """

    def __init__(self, space: FeatureSpace, cfg: RankerConfig):
        super().__init__()
        sizes = space.table_sizes()
        ebc = EmbeddingBagCollection(
            tables=[EmbeddingBagConfig(name=f"t_{key}", embedding_dim=cfg.embedding_dim,
                                       num_embeddings=sizes[key], feature_names=[key])
                    for key in SPARSE_KEYS],
            device=torch.device("cpu"),
        )
        self.dlrm = DLRM(
            embedding_bag_collection=ebc,
            dense_in_features=space.dense_dim,
            dense_arch_layer_sizes=[*cfg.dense_arch, cfg.embedding_dim],
            over_arch_layer_sizes=[*cfg.over_arch, 1],
        )

    def forward(self, sparse: KeyedJaggedTensor, dense: torch.Tensor) -> torch.Tensor:
        return self.dlrm(dense_features=dense, sparse_features=sparse).squeeze(-1)
