"""Ray actors that embed posts: a fault-tolerant pool, and batch mode (parquet to parquet).

Each `EmbeddingActor` loads the encoder once in its constructor; its `embed` calls the plain
`embed_batch`. `EmbeddingPool` keeps a set of long-lived actors, hands each batch to the least
busy one, and, when an actor dies mid-batch (a crash, an OOM kill, `ray.kill`), starts a
replacement and retries the batch there. `embed_texts` sorts texts by length (so a batch holds
texts of similar length and padding wastes little compute), streams the batches through a pool,
and puts the vectors back in input order. Actors take a GPU each when CUDA is available, CPU
threads otherwise. The near-line stream (embeddings/nearline.py) uses the same pool.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable, Iterable, Iterator
from pathlib import Path

import numpy as np
import polars as pl
import ray
import torch
from tqdm.auto import tqdm

from embeddings.config import ActorPoolConfig  # noqa: F401  (re-exported: configs name it here)
from embeddings.encoder import EncoderConfig, embed_batch, load_encoder

log = logging.getLogger(__name__)


def model_version(cfg: EncoderConfig) -> str:
    """The key stored embeddings are versioned by: model directory name and Matryoshka width."""
    name = ("all-MiniLM-L6-v2" if cfg.model_dir is None
            else os.path.basename(os.path.normpath(cfg.model_dir)))
    return name + (f"@{cfg.dim}" if cfg.dim else "") + (f"-{cfg.num_layers}l" if cfg.num_layers else "")


@ray.remote
class EmbeddingActor:
    def __init__(self, encoder_cfg: EncoderConfig, threads: int):
        torch.set_num_threads(threads)
        self.encoder = load_encoder(encoder_cfg)

    def embed(self, texts: list[str]) -> np.ndarray:
        return embed_batch(self.encoder, texts)

    def pid(self) -> int:
        return os.getpid()


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    if not ray.is_initialized():
        ray.init(address=address, num_cpus=None if address else num_cpus,
                 include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)


class EmbeddingPool:
    """Long-lived embedding actors with retry on actor death.

    Submit batches under keys of your choice, then collect (key, vectors) as they finish::

        with EmbeddingPool(cfg) as pool:
            pool.submit("b0", texts)
            for key, vectors in pool.collect(timeout=1.0): ...

    At most `num_actors * in_flight_per_actor` batches are in flight (`pool.full` says when to
    stop submitting: that is the backpressure). A batch whose actor died is resubmitted to a
    replacement actor, up to `max_retries` times; `restarts` counts replaced actors and
    `retries` resubmitted batches.
    """

    def __init__(self, cfg: ActorPoolConfig):
        self.cfg = cfg
        use_gpu = torch.cuda.is_available() and cfg.encoder.device in ("auto", "cuda")
        ensure_ray(cfg.address, num_cpus=max(cfg.num_actors * cfg.threads_per_actor, 1))
        self._actor_cls = EmbeddingActor.options(num_gpus=1 if use_gpu else 0,
                                                 num_cpus=cfg.threads_per_actor)
        self.actors = [self._start_actor() for _ in range(cfg.num_actors)]
        self.restarts = 0  # actors replaced after dying
        self.retries = 0  # batches resubmitted after their actor died
        # ObjectRef -> (key, texts, actor slot, the actor handle it ran on, attempt)
        self._in_flight: dict[ray.ObjectRef, tuple[Hashable, list[str], int, object, int]] = {}

    def _start_actor(self):
        return self._actor_cls.remote(self.cfg.encoder, self.cfg.threads_per_actor)

    @property
    def capacity(self) -> int:
        return self.cfg.num_actors * self.cfg.in_flight_per_actor

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def full(self) -> bool:
        return self.in_flight >= self.capacity

    def wait_ready(self) -> None:
        """Block until every actor has loaded its encoder (so start-up is not timed as work)."""
        ray.get([actor.pid.remote() for actor in self.actors])

    def pids(self) -> list[int]:
        return ray.get([actor.pid.remote() for actor in self.actors])

    def submit(self, key: Hashable, texts: list[str], attempt: int = 0) -> None:
        load = [0] * len(self.actors)
        for _, _, slot, _, _ in self._in_flight.values():
            load[slot] += 1
        slot = int(np.argmin(load))
        actor = self.actors[slot]
        self._in_flight[actor.embed.remote(texts)] = (key, texts, slot, actor, attempt)

    def collect(self, timeout: float | None = None) -> list[tuple[Hashable, np.ndarray]]:
        """Finished batches as (key, vectors); waits up to `timeout` s for the first one."""
        if not self._in_flight:
            return []
        refs = list(self._in_flight)
        ready, _ = ray.wait(refs, num_returns=1, timeout=timeout)
        if ready:  # take every batch that is done by now, not just the first
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        done = []
        for ref in ready:
            key, texts, slot, actor, attempt = self._in_flight.pop(ref)
            try:
                done.append((key, ray.get(ref)))
            except ray.exceptions.RayActorError as err:
                if attempt >= self.cfg.max_retries:
                    raise RuntimeError(f"embedding batch {key!r} failed {attempt + 1} times; "
                                       f"last error: {err}") from err
                if self.actors[slot] is actor:  # the first failure seen from this actor
                    log.warning("embedding actor %d died (%s); starting a replacement",
                                slot, type(err).__name__)
                    self.actors[slot] = self._start_actor()
                    self.restarts += 1
                self.retries += 1
                self.submit(key, texts, attempt + 1)
        return done

    def map(self, batches: Iterable[tuple[Hashable, list[str]]]) -> Iterator[tuple[Hashable, np.ndarray]]:
        """Embed every (key, texts) batch, keeping the pool full; yields in completion order."""
        pending = iter(batches)
        exhausted = False
        while True:
            while not exhausted and not self.full:
                try:
                    self.submit(*next(pending))
                except StopIteration:
                    exhausted = True
            if exhausted and not self._in_flight:
                return
            yield from self.collect(timeout=None)

    def close(self) -> None:
        for actor in self.actors:
            ray.kill(actor)
        self.actors, self._in_flight = [], {}

    def __enter__(self) -> EmbeddingPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def length_bucketed_batches(texts: list[str], batch_size: int) -> list[tuple[np.ndarray, list[str]]]:
    """Batches of input positions and texts, grouped by length (longest first)."""
    order = np.argsort([-len(t) for t in texts], kind="stable")
    return [(order[i: i + batch_size], [texts[j] for j in order[i: i + batch_size]])
            for i in range(0, len(texts), batch_size)]


def embed_texts(texts: list[str], cfg: ActorPoolConfig, desc: str = "embedding posts",
                pool: EmbeddingPool | None = None) -> np.ndarray:
    """Embed `texts` with a pool of Ray actors; returns [len(texts), dim] float32 in input order.

    Pass a running `pool` to reuse its warm actors; otherwise one is started and closed here.
    """
    if not texts:
        raise ValueError("embed_texts: no texts to embed")
    own_pool = pool is None
    pool = pool or EmbeddingPool(cfg)
    batches = length_bucketed_batches(texts, cfg.encoder.batch_size)
    out: np.ndarray | None = None
    try:
        with tqdm(total=len(texts), desc=desc, unit="post", mininterval=2.0) as bar:
            for i, vectors in pool.map((i, batch) for i, (_, batch) in enumerate(batches)):
                if out is None:
                    out = np.empty((len(texts), vectors.shape[1]), dtype=np.float32)
                out[batches[i][0]] = vectors
                bar.update(len(vectors))
    finally:
        if own_pool:
            pool.close()
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
