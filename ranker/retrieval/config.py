"""The retrieval stage's configuration: the FAISS index type and its parameters
(conf/retrieval/), checked when built, and the faiss.index_factory string they make; the text
dual encoder's (member prompts and posts through one trained tower)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ranker.retrieval.prompts import PromptConfig
from recsim.world import checks

INDEX_TYPES = ("Flat", "HNSW", "IVFFlat", "IVFPQ")
_ALIASES = {"flat": "Flat", "hnsw": "HNSW", "ivfflat": "IVFFlat", "ivf_flat": "IVFFlat",
            "ivfpq": "IVFPQ", "ivf_pq": "IVFPQ"}


@dataclass
class RetrievalConfig:
    index: str = "Flat"  # Flat | HNSW | IVFFlat | IVFPQ
    dim: int | None = None  # Matryoshka: index the first `dim` coordinates; None = all
    top_k: int = 100
    recall_at: tuple[int, ...] = (10, 50, 100)
    history_halflife_days: float = 7.0  # recency weight of engaged posts in a member's vector
    # HNSW
    hnsw_m: int = 32
    ef_construction: int = 200
    ef_search: int = 128
    # IVF (nlist None: about 4 * sqrt(P), at least 39 training points per list)
    nlist: int | None = None
    nprobe: int = 16
    # PQ: pq_m sub-quantizers (must divide the index dim; None: dim / 8) of pq_bits each
    pq_m: int | None = None
    pq_bits: int = 8
    compact_fraction: float = 0.2  # HNSW: rebuild once tombstones exceed this share
    max_train_points: int | None = 100_000  # IVF / PQ k-means on a seeded sample of this size
    seed: int = 0  # k-means initialisation of IVF / PQ training

    def __post_init__(self):
        index_type(self.index)  # "retrieval.index: unknown index type ..."
        checks.at_least("retrieval.dim", self.dim, 1, optional=True)
        checks.at_least("retrieval.top_k", self.top_k, 1)
        checks.all_at_least("retrieval.recall_at", self.recall_at, 1)
        checks.positive("retrieval.history_halflife_days", self.history_halflife_days)
        checks.at_least("retrieval.hnsw_m", self.hnsw_m, 2)  # FAISS aborts the process below 2
        checks.at_least("retrieval.ef_construction", self.ef_construction, 1)
        checks.at_least("retrieval.ef_search", self.ef_search, 1)
        checks.at_least("retrieval.nlist", self.nlist, 1, optional=True)
        checks.at_least("retrieval.nprobe", self.nprobe, 1)
        checks.at_least("retrieval.pq_m", self.pq_m, 1, optional=True)
        if self.pq_m and self.dim and self.dim % self.pq_m:
            raise ValueError(f"retrieval.pq_m: {self.pq_m} does not divide retrieval.dim {self.dim}")
        checks.at_least("retrieval.pq_bits", self.pq_bits, 1)
        checks.positive("retrieval.compact_fraction", self.compact_fraction)
        checks.at_least("retrieval.max_train_points", self.max_train_points, 1, optional=True)


def index_type(name: str) -> str:
    """The canonical index type for `name`; ValueError naming the field for unknown types."""
    canonical = _ALIASES.get(str(name).lower().replace("-", "_"))
    if canonical is None:
        raise ValueError(f"retrieval.index: unknown index type {name!r}; choose from "
                         f"{list(INDEX_TYPES)}")
    return canonical


def factory_string(cfg: RetrievalConfig, dim: int, n_train: int) -> str:
    """The faiss.index_factory string for `cfg` at index dim `dim` with n_train vectors."""
    kind = index_type(cfg.index)
    if kind == "Flat":
        return "Flat"
    if kind == "HNSW":
        return f"HNSW{cfg.hnsw_m}"
    nlist = cfg.nlist or int(np.clip(4 * np.sqrt(n_train), 1, max(n_train // 39, 1)))
    # k-means needs at least one training point per centroid; FAISS's own error says less.
    sample = min(n_train, cfg.max_train_points or n_train)
    if nlist > sample:
        raise ValueError(f"retrieval.nlist: {nlist} IVF lists need at least {nlist} posts to train "
                         f"on, got {sample}" + (f" (retrieval.max_train_points={cfg.max_train_points})"
                                                if sample < n_train else "")
                         + "; lower it, or null for about 4 * sqrt(posts)")
    if kind == "IVFFlat":
        return f"IVF{nlist},Flat"
    pq_m = cfg.pq_m or max(dim // 8, 1)
    if dim % pq_m:
        raise ValueError(f"retrieval.pq_m: {pq_m} does not divide the index dim {dim}")
    if 2 ** cfg.pq_bits > sample:
        raise ValueError(f"retrieval.pq_bits: {cfg.pq_bits} bits make {2 ** cfg.pq_bits} codes per "
                         f"sub-quantizer, which need at least that many posts to train on, got "
                         f"{sample}; lower it")
    return f"IVF{nlist},PQ{pq_m}x{cfg.pq_bits}"


@dataclass
class DualEncoderConfig:
    model_dir: str | None = None  # any HF encoder or causal LM dir; None: the MiniLM package
    pooling: str = "mean"  # mean | cls | last (causal LMs)
    num_layers: int | None = None  # keep only the first N layers (fast tests)
    prompt_max_length: int = 128
    post_max_length: int = 64
    steps: int = 100
    batch_size: int = 32
    hard_negatives: int = 1  # per row: shown-but-not-clicked posts of the same request
    learning_rate: float = 5e-5
    warmup_steps: int = 10
    scale: float = 20.0  # inverse temperature of the logits
    freeze_embeddings: bool = True
    precision: str = "auto"  # auto | bf16 | fp32 (autocast on CPU)
    engagement: str = "click"
    seed: int = 0
    prompt: PromptConfig = field(default_factory=PromptConfig)
    key: str = "dual_encoder"  # where this config sits, for its error messages

    def __post_init__(self):
        from embeddings.config import POOLINGS, PRECISIONS, check_model_dir
        from recsim.world.rewards import ACTIONS

        key = self.key
        if self.model_dir is not None:
            check_model_dir(self.model_dir, f"{key}.model_dir")
        checks.one_of(f"{key}.pooling", self.pooling, POOLINGS)
        checks.at_least(f"{key}.num_layers", self.num_layers, 1, optional=True)
        checks.at_least(f"{key}.prompt_max_length", self.prompt_max_length, 1)
        checks.at_least(f"{key}.post_max_length", self.post_max_length, 1)
        checks.at_least(f"{key}.steps", self.steps, 1)
        checks.at_least(f"{key}.batch_size", self.batch_size, 2)  # in-batch negatives
        checks.at_least(f"{key}.hard_negatives", self.hard_negatives, 0)
        checks.positive(f"{key}.learning_rate", self.learning_rate)
        checks.at_least(f"{key}.warmup_steps", self.warmup_steps, 0)
        checks.positive(f"{key}.scale", self.scale)
        checks.one_of(f"{key}.precision", self.precision, PRECISIONS)
        checks.one_of(f"{key}.engagement", self.engagement, ACTIONS)
