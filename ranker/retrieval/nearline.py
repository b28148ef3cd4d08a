"""Near-line embedding: new posts become searchable seconds after they are created.

The world's posts are replayed as a stream in creation order at `rate` posts per second. A
producer thread puts each post on a bounded queue at its creation time; the consumer cuts
micro-batches (at most `max_batch` posts, or whatever arrived within `max_wait_s` of the
batch's first post), sends them to the actor pool (embeddings/actors.py), and upserts each
finished batch into the embedding store and the FAISS index. For every post it records when it
was created and when it became searchable.

Backpressure: the pool holds at most `num_actors * in_flight_per_actor` batches, the consumer
holds at most one open batch, and the queue at most `queue_size` posts. When the stream outpaces
the actors the producer blocks on the full queue (the delay shows up as staleness, not as
memory), so memory stays bounded whatever the rate.

Exactly once: the store is keyed by (post_id, model_version) and upserts are idempotent, so a
batch retried after its actor died (EmbeddingPool) can never store a post twice.

The job that replays a world's posts through it: recsim/jobs/nearline.py (`recsim-nearline`).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from embeddings.actors import ActorPoolConfig, EmbeddingPool, model_version
from recsim.world import checks

log = logging.getLogger(__name__)

ARRIVALS = ("world", "uniform")
STORE_SCHEMA = {"post_id": pl.Int64, "model_version": pl.String, "vector": pl.List(pl.Float32)}


@dataclass
class NearlineConfig:
    rate: float = 20.0  # posts per second in the replayed stream
    arrivals: str = "world"  # world: gaps follow posts' created_at, scaled to `rate`; uniform
    limit: int | None = None  # stream only the first N posts (in creation order)
    max_batch: int = 16  # a micro-batch is cut at this many posts ...
    max_wait_s: float = 0.2  # ... or this long after its first post arrived
    queue_size: int = 256  # posts waiting for a batch; the producer blocks when it is full
    report_every_s: float = 10.0  # log progress (and sample memory) this often
    index: str = "Flat"  # the FAISS index built from the first batch: Flat or HNSW
    pool: ActorPoolConfig = field(default_factory=ActorPoolConfig)

    def __post_init__(self):
        from ranker.retrieval.index import index_type

        checks.positive("nearline.rate", self.rate)
        checks.one_of("nearline.arrivals", self.arrivals, ARRIVALS)
        checks.at_least("nearline.limit", self.limit, 1, optional=True)
        checks.at_least("nearline.max_batch", self.max_batch, 1)
        checks.at_least("nearline.max_wait_s", self.max_wait_s, 0)
        checks.at_least("nearline.queue_size", self.queue_size, 1)
        checks.positive("nearline.report_every_s", self.report_every_s)
        try:  # IVF types are allowed: stream_posts takes a prebuilt index for them
            index_type(self.index)
        except ValueError as err:
            raise ValueError(str(err).replace("retrieval.index", "nearline.index", 1)) from None


class EmbeddingStore:
    """Post vectors keyed by (post_id, model_version); upserts are idempotent.

    `upsert` overwrites a key that is already present, so replaying or retrying a batch leaves
    one row per key. `write_parquet` writes (post_id, model_version, vector) atomically, the
    same layout as batch mode (embeddings/actors.py: embed_posts_to_parquet).
    """

    def __init__(self):
        self._vectors: dict[tuple[int, str], np.ndarray] = {}
        self.n_writes = 0  # upserted rows, overwrites included
        self.n_overwrites = 0

    def __len__(self) -> int:
        return len(self._vectors)

    def upsert(self, post_ids: np.ndarray, vectors: np.ndarray, version: str) -> None:
        if len(post_ids) != len(vectors):
            raise ValueError(f"store upsert: {len(post_ids)} post_ids but {len(vectors)} vectors")
        for post_id, vector in zip(np.asarray(post_ids, dtype=np.int64).tolist(), vectors):
            key = (post_id, version)
            self.n_overwrites += key in self._vectors
            self._vectors[key] = np.asarray(vector, dtype=np.float32)
        self.n_writes += len(post_ids)

    def get(self, post_id: int, version: str) -> np.ndarray:
        try:
            return self._vectors[(int(post_id), version)]
        except KeyError:
            raise KeyError(f"post_id {post_id}: no embedding under model version {version!r}") from None

    def nbytes(self) -> int:
        return sum(v.nbytes for v in self._vectors.values())

    def to_frame(self) -> pl.DataFrame:
        keys = list(self._vectors)
        return pl.DataFrame({"post_id": [k[0] for k in keys], "model_version": [k[1] for k in keys],
                             "vector": [self._vectors[k].tolist() for k in keys]},
                            schema=STORE_SCHEMA).sort("model_version", "post_id")

    def write_parquet(self, path: str | Path) -> Path:
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        self.to_frame().write_parquet(tmp)
        os.replace(tmp, path)
        return path


@dataclass
class NearlineResult:
    post_ids: np.ndarray  # [N] in stream order
    created_s: np.ndarray  # [N] seconds since the stream started: the post's creation
    searchable_s: np.ndarray  # [N] seconds since the stream started: upserted into the index
    wall_s: float
    restarts: int  # actors replaced after dying
    retries: int  # batches resubmitted to a replacement actor
    max_queue: int  # deepest the queue got
    memory: list[dict] = field(default_factory=list)  # RSS samples: t_s, driver_mb, actors_mb

    @property
    def freshness_s(self) -> np.ndarray:
        return self.searchable_s - self.created_s

    def summary(self) -> dict:
        fresh = self.freshness_s
        return {"posts": len(self.post_ids), "wall_s": self.wall_s,
                "posts_per_s": len(self.post_ids) / self.wall_s,
                "freshness_p50_s": float(np.percentile(fresh, 50)),
                "freshness_p99_s": float(np.percentile(fresh, 99)),
                "freshness_max_s": float(fresh.max()), "restarts": self.restarts,
                "retries": self.retries,
                "max_queue": self.max_queue, "memory": self.memory}


def arrival_offsets(created_at: pl.Series, rate: float, arrivals: str) -> np.ndarray:
    """Seconds after the stream starts at which each post (in creation order) arrives."""
    if rate <= 0:
        raise ValueError(f"nearline.rate: must be > 0 posts/s, got {rate}")
    n = len(created_at)
    if arrivals == "uniform" or n < 2:
        return np.arange(n) / rate
    if arrivals != "world":
        raise ValueError(f"nearline.arrivals: must be 'world' or 'uniform', got {arrivals!r}")
    t = created_at.dt.epoch("us").to_numpy().astype(np.float64)
    span = t[-1] - t[0]
    if span <= 0:
        return np.arange(n) / rate
    return (t - t[0]) / span * (n - 1) / rate  # same order and relative gaps, mean rate `rate`


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MiB (Linux /proc), NaN when it cannot be read."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def stream_posts(posts: pl.DataFrame, cfg: NearlineConfig, index=None,
                 store: EmbeddingStore | None = None, pool: EmbeddingPool | None = None,
                 on_batch: Callable[[EmbeddingPool, int], None] | None = None
                 ) -> tuple[NearlineResult, EmbeddingStore, object]:
    """Replay `posts` (post_id, text, created_at) as a stream; embed, store and index each.

    Args:
        index: a ranker.retrieval.index.PostIndex to upsert into (e.g. built from a backfill); None
            builds one of type `cfg.index` from the first batch.
        store: the embedding store to upsert into; None starts an empty one.
        pool: a running EmbeddingPool (warm actors); None starts one from `cfg.pool`.
        on_batch: called as on_batch(pool, n_searchable) after each upsert (tests use it to
            kill an actor mid-stream).

    Returns (timings per post, the store, the index).
    """
    _check_stream(posts, cfg, index)
    posts = posts.sort("created_at", "post_id")
    if cfg.limit:
        posts = posts.head(cfg.limit)
    stream = _Stream(posts, cfg, index)
    store = store if store is not None else EmbeddingStore()
    own_pool = pool is None
    pool = pool or EmbeddingPool(cfg.pool)
    pool.wait_ready()  # the stream starts once the actors have loaded the encoder

    stream.start_producer()
    try:
        stream.consume(pool, store, on_batch)
    finally:
        stream.stop_producer()
        if own_pool:
            pool.close()
    return stream.result(pool), store, stream.index


def _check_stream(posts: pl.DataFrame, cfg: NearlineConfig, index) -> None:
    """Fail on bad input or settings before any actor starts."""
    from ranker.retrieval.index import index_type

    if index is None and index_type(cfg.index) not in ("Flat", "HNSW"):
        raise ValueError(f"nearline.index: {cfg.index} needs training; build it from a backfill "
                         "and pass it as `index`, or use Flat or HNSW")
    for col in ("post_id", "text", "created_at"):
        if col not in posts.columns:
            raise ValueError(f"near-line posts: column '{col}' is missing")
    if posts.height == 0:
        raise ValueError("near-line posts: the stream is empty (0 posts)")
    if cfg.max_batch < 1 or cfg.queue_size < 1 or cfg.max_wait_s < 0:
        raise ValueError("nearline: max_batch and queue_size must be >= 1 and max_wait_s >= 0")


class _Stream:
    """One replay of a stream of posts: a producer thread puts each post's row on a bounded
    queue at its arrival time; the consumer (`consume`, in the calling thread) cuts
    micro-batches, sends them to the actor pool and upserts each finished batch."""

    def __init__(self, posts: pl.DataFrame, cfg: NearlineConfig, index):
        self.cfg = cfg
        self.ids = posts["post_id"].to_numpy()
        self.created = posts["created_at"].to_numpy()
        self.texts = posts["text"].to_list()
        self.offsets = arrival_offsets(posts["created_at"], cfg.rate, cfg.arrivals)
        self.version = model_version(cfg.pool.encoder)
        self.index = index  # built from the first batch when None
        self.inbox: queue.Queue = queue.Queue(maxsize=cfg.queue_size)
        self.searchable = np.full(len(self.ids), np.nan)
        self.stop = threading.Event()
        self.start = 0.0
        self.producer: threading.Thread | None = None
        # The consumer's state: the open batch, the batches in flight, counters.
        self.batch: list[int] = []
        self.batch_opened = 0.0
        self.stream_done = False
        self.n_done = self.max_queue = self.n_batches = 0
        self.memory: list[dict] = []
        self.batches: dict[int, list[int]] = {}

    def start_producer(self) -> None:
        """Start the clock and the producer thread."""
        self.start = time.perf_counter()
        self.producer = threading.Thread(target=self._produce, name="nearline-producer", daemon=True)
        self.producer.start()

    def stop_producer(self) -> None:
        """Stop the producer (it may be waiting on a full queue) and wait for it."""
        self.stop.set()
        self.producer.join(timeout=5)

    def _produce(self) -> None:
        """Put each post's row on the inbox at its arrival time, then None (end of stream)."""
        for i, offset in enumerate(self.offsets):
            delay = self.start + offset - time.perf_counter()
            if delay > 0 and self.stop.wait(delay):
                return
            while not self.stop.is_set():  # a full queue blocks the producer: backpressure
                try:
                    self.inbox.put(i, timeout=0.1)
                    break
                except queue.Full:
                    continue
        self.inbox.put(None)

    def consume(self, pool: EmbeddingPool, store: EmbeddingStore,
                on_batch: Callable[[EmbeddingPool, int], None] | None) -> None:
        """Batch, embed and upsert until the stream has ended and every batch is back."""
        next_report = self.start
        while not (self.stream_done and not self.batch and pool.in_flight == 0):
            now = time.perf_counter()
            # 1. Take arrivals into the open batch (never more than one batch's worth).
            self._take_arrivals()
            # 2. Cut the batch when it is full, old enough, or the stream has ended.
            self._cut_batch(pool, now)
            # 3. Upsert finished batches: the moment their posts become searchable.
            self._upsert_finished(pool, store, on_batch)
            if not pool.in_flight and not self.stream_done:
                time.sleep(0.002)  # idle: waiting for posts to arrive or a batch to be due
            if time.perf_counter() >= next_report:
                self._report(pool, store)
                next_report += self.cfg.report_every_s
        self.memory.append(_memory_sample(pool, time.perf_counter() - self.start, store))

    def _take_arrivals(self) -> None:
        """Step 1: move arrived posts into the open batch, up to `max_batch`."""
        self.max_queue = max(self.max_queue, self.inbox.qsize())
        while not self.stream_done and len(self.batch) < self.cfg.max_batch:
            try:
                item = self.inbox.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self.stream_done = True
                break
            if not self.batch:
                self.batch_opened = time.perf_counter()
            self.batch.append(item)

    def _cut_batch(self, pool: EmbeddingPool, now: float) -> None:
        """Step 2: send the open batch to the pool when it is due and the pool has room."""
        cfg, batch = self.cfg, self.batch
        due = batch and (len(batch) >= cfg.max_batch or self.stream_done
                         or now - self.batch_opened >= cfg.max_wait_s)
        if due and not pool.full:
            key = self.n_batches = self.n_batches + 1
            self.batches[key] = batch
            pool.submit(key, [self.texts[i] for i in batch])
            self.batch = []

    def _upsert_finished(self, pool: EmbeddingPool, store: EmbeddingStore,
                         on_batch: Callable[[EmbeddingPool, int], None] | None) -> None:
        """Step 3: upsert each finished batch into the store and the index (building the index
        from the first batch when there is none) and mark its posts searchable. Blocks for a
        result only when nothing else can happen; otherwise polls briefly."""
        from ranker.retrieval.index import PostIndex, RetrievalConfig

        wait = None if (self.stream_done and not self.batch) else 0.005
        for key, vectors in pool.collect(timeout=wait):
            rows = np.asarray(self.batches.pop(key))
            ids, created = self.ids[rows], self.created[rows]
            store.upsert(ids, vectors, self.version)
            if self.index is None:
                self.index = PostIndex(ids, vectors, RetrievalConfig(index=self.cfg.index),
                                       created=created)
            else:
                self.index.upsert(ids, vectors, created=created)
            self.searchable[rows] = time.perf_counter() - self.start
            self.n_done += len(rows)
            if on_batch is not None:
                on_batch(pool, self.n_done)

    def _report(self, pool: EmbeddingPool, store: EmbeddingStore) -> None:
        """Sample memory and log progress."""
        self.memory.append(_memory_sample(pool, time.perf_counter() - self.start, store))
        log.info("near-line: %d/%d searchable, queue %d, in flight %d, %.0f MiB",
                 self.n_done, len(self.ids), self.inbox.qsize(), pool.in_flight,
                 self.memory[-1]["driver_mb"] + self.memory[-1]["actors_mb"])

    def result(self, pool: EmbeddingPool) -> NearlineResult:
        """Per post: creation and searchable times since the start; the pool's restarts."""
        return NearlineResult(self.ids, self.offsets, self.searchable,
                              time.perf_counter() - self.start, pool.restarts, pool.retries,
                              self.max_queue, self.memory)


def _memory_sample(pool: EmbeddingPool, t: float, store: EmbeddingStore) -> dict:
    try:
        actors = sum(rss_mb(pid) for pid in pool.pids())
    except Exception:  # an actor being replaced has no pid yet  # noqa: BLE001
        actors = float("nan")
    return {"t_s": t, "driver_mb": rss_mb(os.getpid()), "actors_mb": actors,
            "store_mb": store.nbytes() / 2**20}
