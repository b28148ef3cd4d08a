"""Post vectors for a run: every post through each encoder a policy asks for, once per encoder.

A policy may bring its own post encoder (a fine-tuned model directory, a text prefix such as
e5's "passage: "); policies that ask for the same encoder share one embedding pass. The run's
own encoder (`embeddings` config group) has the key (None, None).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embeddings.actors import ActorPoolConfig, embed_texts
from embeddings.cache import cached_embed, model_key
from embeddings.config import check_model_dir
from recsim.paths import CACHE_DIR, project_path

log = logging.getLogger(__name__)

EncoderKey = tuple[str | None, str | None]  # (model directory, text prefix)
RUN_ENCODER: EncoderKey = (None, None)


def resolve_model_dir(path: str | None, key: str = "sim policy encoder_dir") -> str | None:
    """A model directory as an absolute path (relative ones from the project root), or None;
    checked by the one model-directory check (embeddings.config.check_model_dir)."""
    if path is None:
        return None
    return str(check_model_dir(project_path(path), key,
                               "train it first with `make finetune` (python -m recsim.jobs.finetune)"))


def pool_for(embed_cfg: ActorPoolConfig, model_dir: str | None, text_prefix: str | None
             ) -> tuple[EncoderKey, ActorPoolConfig]:
    """(key, pool config) of the encoder: the run's `embed_cfg` with the model directory and the
    text prefix replaced where they are given."""
    model_dir = resolve_model_dir(model_dir)
    encoder = embed_cfg.encoder
    if model_dir is not None:
        encoder = dataclasses.replace(encoder, model_dir=model_dir)
    if text_prefix is not None:
        encoder = dataclasses.replace(encoder, text_prefix=text_prefix)
    return (model_dir, text_prefix), dataclasses.replace(embed_cfg, encoder=encoder)


@dataclass
class PostVectors:
    """Which encoder each role (control, treatment, ...) uses, and each encoder's post vectors."""

    key_of: dict[str, EncoderKey]  # role -> encoder key
    pools: dict[EncoderKey, ActorPoolConfig]  # encoder key -> its actor pool config
    vectors: dict[EncoderKey, np.ndarray]  # encoder key -> [P, D] float32, in the posts' order

    def of(self, role: str) -> np.ndarray:
        return self.vectors[self.key_of[role]]

    @property
    def default(self) -> np.ndarray:
        return self.vectors[RUN_ENCODER]


def embed_posts(texts: list[str], embed_cfg: ActorPoolConfig,
                encoders: dict[str, tuple[str | None, str | None]]) -> PostVectors:
    """Embed `texts` (the posts, in order) with the run's encoder and every role's own.

    Args:
        encoders: role -> (model directory or None, text prefix or None).
    """
    chosen = {role: pool_for(embed_cfg, d, p) for role, (d, p) in encoders.items()}
    pools = dict([(RUN_ENCODER, embed_cfg), *chosen.values()])
    vectors = {}
    for key, pool_cfg in pools.items():
        name = Path(key[0]).name if key[0] else "default"
        prefix = f", prefix {key[1]!r}" if key[1] else ""
        vectors[key] = embed_with_cache(texts, pool_cfg, f"embedding posts ({name}{prefix})")
    return PostVectors({role: key for role, (key, _) in chosen.items()}, pools, vectors)


def embed_with_cache(texts: list[str], pool_cfg: ActorPoolConfig, desc: str) -> np.ndarray:
    """[N, D] vectors of `texts` on the actor pool, through the embedding cache
    (embeddings/cache.py) when pool_cfg.cache: only texts it has not seen are embedded."""
    if not pool_cfg.cache:
        return embed_texts(texts, pool_cfg, desc=desc)
    from embeddings.encoder import default_model_dir, resolve_backend, resolve_device_and_dtype

    encoder = pool_cfg.encoder
    device, dtype = resolve_device_and_dtype(encoder)
    computed_on = f"{device.type}-{dtype}-{resolve_backend(encoder, device)}"
    key = model_key(encoder, encoder.model_dir or default_model_dir(), computed_on)
    vectors, _ = cached_embed(texts, lambda missing: embed_texts(missing, pool_cfg, desc=desc),
                              CACHE_DIR / "embeddings" / key)
    return vectors
