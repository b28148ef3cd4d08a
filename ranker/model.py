"""The ranking model: TorchRec DLRM or DCN-v2 with one head per engagement type.

    sparse KJT ──► EmbeddingBagCollection (member, author, topic tables; mean pooling) ─┐
                                                                                        ├─► interaction ─► over arch ─► [B, H] logits
    dense [B, N] ──► dense arch (MLP to D) ─────────────────────────────────────────────┘

The interaction is DLRM's pairwise dot products (`interaction: dlrm`, torchrec.models.dlrm.DLRM)
or a low-rank DCN-v2 cross network (`interaction: dcn`, torchrec.models.dlrm.DLRM_DCN). The over
arch's last layer has one output per head (click, like, comment, share): a shared-bottom
multi-task model. The ranking score is a weighted sum of the heads' probabilities
(`score_weights`), as feeds combine predicted actions into one value.
Shape legend: B rows, N dense features, D embedding dim, H heads.
"""

from __future__ import annotations

from dataclasses import asdict

import torch
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor, PoolingType
from torchrec.models.dlrm import DLRM, DLRM_DCN

# The config lives in ranker/config.py (no TorchRec import, for fast config checks); it is
# re-exported here, where configs name it (_target_: ranker.model.RankerConfig).
from ranker.config import INTERACTIONS, RankerConfig  # noqa: F401
from ranker.features import FeatureSpace


class MultiTaskRanker(torch.nn.Module):
    """DLRM / DCN-v2 over a FeatureSpace, returning one logit per head.

    Example::

        model = MultiTaskRanker(space, RankerConfig(interaction="dcn"))
        logits = model(*space.build_batch(rows))   # [B, H]
        score = model.ranking_score(logits)         # [B]
    """

    def __init__(self, space: FeatureSpace, cfg: RankerConfig):
        super().__init__()
        self.heads = list(cfg.heads)
        self.register_buffer("score_weights", torch.tensor(
            [cfg.score_weights.get(h, 0.0) for h in self.heads], dtype=torch.float32))
        # Everything needed to rebuild the module: saved with its weights (ranker/train.py).
        self.meta = {"config": asdict(cfg), "groups": list(space.groups),
                     "tables": {t: [n, list(f)] for t, (n, f) in space.tables().items()},
                     "dense_dim": space.dense_dim}
        ebc = EmbeddingBagCollection(
            tables=[EmbeddingBagConfig(name=f"t_{table}", embedding_dim=cfg.embedding_dim,
                                       num_embeddings=rows, feature_names=features,
                                       pooling=PoolingType.MEAN)
                    for table, (rows, features) in space.tables().items()],
            device=torch.device("cpu"),
        )
        common = dict(embedding_bag_collection=ebc, dense_in_features=space.dense_dim,
                      dense_arch_layer_sizes=[*cfg.dense_arch, cfg.embedding_dim],
                      over_arch_layer_sizes=[*cfg.over_arch, len(self.heads)])
        if cfg.interaction == "dcn":
            self.net = DLRM_DCN(**common, dcn_num_layers=cfg.dcn_num_layers,
                                dcn_low_rank_dim=cfg.dcn_low_rank_dim)
        else:
            self.net = DLRM(**common)

    def forward(self, sparse: KeyedJaggedTensor, dense: torch.Tensor) -> torch.Tensor:
        """[B, H] logits, heads in `self.heads` order."""
        return self.net(dense_features=dense, sparse_features=sparse)

    def output_layer(self) -> torch.nn.Linear:
        """The over arch's last layer: one output per head."""
        return self.net.over_arch.model[-1]

    def ranking_score(self, logits: torch.Tensor) -> torch.Tensor:
        """[B] the weighted sum of head probabilities: the feed's value of showing each row."""
        return torch.sigmoid(logits) @ self.score_weights
