"""Ray actors that embed posts in batch (in memory, or parquet to parquet with resume).

Each `EmbeddingActor` loads the encoder once in its constructor; its `embed` calls the plain
`embed_batch`. `embed_texts` sorts texts by length (so a batch holds texts of similar length and
padding wastes little compute), feeds the batches to a pool of actors, and puts the vectors back
in input order. Actors take a GPU each when CUDA is available, CPU threads otherwise.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import ray
import torch
from ray.util import ActorPool
from tqdm.auto import tqdm

from embeddings.encoder import EncoderConfig, embed_batch, load_encoder

log = logging.getLogger(__name__)


@dataclass
class ActorPoolConfig:
    num_actors: int = 1
    threads_per_actor: int = 2
    address: str | None = None  # a Ray cluster address; None starts a local one
    encoder: EncoderConfig = field(default_factory=EncoderConfig)


@ray.remote
class EmbeddingActor:
    def __init__(self, encoder_cfg: EncoderConfig, threads: int):
        torch.set_num_threads(threads)
        self.encoder = load_encoder(encoder_cfg)

    def embed(self, batch: tuple[np.ndarray, list[str]]) -> tuple[np.ndarray, np.ndarray]:
        positions, texts = batch
        return positions, embed_batch(self.encoder, texts)


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    if not ray.is_initialized():
        ray.init(address=address, num_cpus=None if address else num_cpus,
                 include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)


def length_bucketed_batches(texts: list[str], batch_size: int) -> list[tuple[np.ndarray, list[str]]]:
    """Batches of input positions and texts, grouped by length (longest first)."""
    order = np.argsort([-len(t) for t in texts], kind="stable")
    return [(order[i: i + batch_size], [texts[j] for j in order[i: i + batch_size]])
            for i in range(0, len(texts), batch_size)]


def embed_texts(texts: list[str], cfg: ActorPoolConfig, desc: str = "embedding posts") -> np.ndarray:
    """Embed `texts` with a pool of Ray actors; returns [len(texts), dim] float32 in input order."""
    if not texts:
        raise ValueError("embed_texts: no texts to embed")
    use_gpu = torch.cuda.is_available() and cfg.encoder.device in ("auto", "cuda")
    ensure_ray(cfg.address, num_cpus=max(cfg.num_actors * cfg.threads_per_actor, 1))
    actor_cls = EmbeddingActor.options(num_gpus=1 if use_gpu else 0,
                                       num_cpus=cfg.threads_per_actor)
    actors = [actor_cls.remote(cfg.encoder, cfg.threads_per_actor) for _ in range(cfg.num_actors)]
    batches = length_bucketed_batches(texts, cfg.encoder.batch_size)
    out: np.ndarray | None = None
    with tqdm(total=len(texts), desc=desc, unit="post", mininterval=2.0) as bar:
        for positions, vectors in ActorPool(actors).map_unordered(
                lambda actor, batch: actor.embed.remote(batch), batches):
            if out is None:
                out = np.empty((len(texts), vectors.shape[1]), dtype=np.float32)
            out[positions] = vectors
            bar.update(len(positions))
    for actor in actors:
        ray.kill(actor)
    return out


def embed_posts_to_parquet(posts_path: str | Path, out_path: str | Path, cfg: ActorPoolConfig,
                           model_version: str) -> pl.DataFrame:
    """Batch mode: posts parquet (post_id, text) -> embeddings parquet (post_id, model_version,
    vector). Resumable: posts already in `out_path` under the same model version are skipped.
    The output is written to a temporary file and renamed, so it is never half-written.

    Returns the rows embedded by this call.
    """
    posts_path, out_path = Path(posts_path), Path(out_path)
    if not posts_path.exists():
        raise FileNotFoundError(f"{posts_path}: no such posts file")
    posts = pl.read_parquet(posts_path)
    for col, dtype in (("post_id", pl.Int64), ("text", pl.String)):
        if col not in posts.columns:
            raise ValueError(f"{posts_path}: column '{col}' is missing")
        if posts.schema[col] != dtype:
            raise ValueError(f"{posts_path}: column '{col}' has dtype {posts.schema[col]}, expected {dtype}")
    if posts.height == 0:
        raise ValueError(f"{posts_path}: posts table is empty (0 rows)")
    if posts["post_id"].is_duplicated().any():
        raise ValueError(f"{posts_path}: column 'post_id' has duplicate ids")
    existing = pl.read_parquet(out_path) if out_path.exists() else None
    todo = posts
    if existing is not None:
        done = existing.filter(pl.col("model_version") == model_version)["post_id"]
        todo = posts.filter(~pl.col("post_id").is_in(done.implode()))
    log.info("batch embedding: %d posts, %d already embedded by %s", posts.height,
             posts.height - todo.height, model_version)
    if todo.height == 0:
        return todo.select("post_id", model_version=pl.lit(model_version),
                           vector=pl.lit(None, dtype=pl.List(pl.Float32)))
    vectors = embed_texts(todo["text"].to_list(), cfg, desc=f"embedding {posts_path.name}")
    new = pl.DataFrame({"post_id": todo["post_id"], "model_version": model_version,
                        "vector": pl.Series(list(vectors), dtype=pl.List(pl.Float32))})
    merged = new if existing is None else pl.concat([existing, new])
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    merged.write_parquet(tmp)
    os.replace(tmp, out_path)
    return new
