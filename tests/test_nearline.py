"""Near-line embedding: the idempotent store, stream timing, and a real actor killed mid-stream."""

import numpy as np
import polars as pl
import pytest

from embeddings.actors import ActorPoolConfig, model_version
from embeddings.encoder import EncoderConfig, embed_batch, load_encoder
from ranker.retrieval.nearline import EmbeddingStore, NearlineConfig, arrival_offsets, stream_posts

TINY = EncoderConfig(num_layers=2, batch_size=8, precision="fp32")


def test_store_upsert_is_idempotent_per_post_and_model_version(tmp_path):
    store = EmbeddingStore()
    v = np.eye(3, dtype=np.float32)
    store.upsert(np.array([1, 2, 3]), v, "m1")
    store.upsert(np.array([2, 3]), 2 * v[1:], "m1")  # a retried batch
    store.upsert(np.array([2]), v[:1], "m2")  # another model version is another key
    assert len(store) == 4 and store.n_writes == 6 and store.n_overwrites == 2
    assert np.array_equal(store.get(3, "m1"), 2 * v[2])
    frame = pl.read_parquet(store.write_parquet(tmp_path / "store.parquet"))
    assert frame.select("post_id", "model_version").rows() == [(1, "m1"), (2, "m1"), (3, "m1"), (2, "m2")]
    with pytest.raises(KeyError, match="post_id 9"):
        store.get(9, "m1")


def test_arrival_offsets_keep_order_gaps_and_mean_rate():
    created = (pl.Series([0, 10, 10, 40], dtype=pl.Int64) * 1_000_000).cast(pl.Datetime("us"))
    offsets = arrival_offsets(pl.Series(created), rate=2.0, arrivals="world")
    assert np.allclose(offsets, [0.0, 0.375, 0.375, 1.5])  # 3 gaps over 1.5 s = 2 posts/s
    assert np.allclose(arrival_offsets(pl.Series(created), 4.0, "uniform"), [0, .25, .5, .75])
    with pytest.raises(ValueError, match="nearline.rate"):
        arrival_offsets(pl.Series(created), 0.0, "world")
    with pytest.raises(ValueError, match="nearline.arrivals"):
        arrival_offsets(pl.Series(created), 1.0, "poisson")


def test_stream_rejects_bad_input_before_starting(small_corpus, small_world):
    with pytest.raises(ValueError, match="column 'created_at' is missing"):
        stream_posts(small_corpus.select("post_id", "text"), NearlineConfig())
    with pytest.raises(ValueError, match="nearline.index: IVFPQ needs training"):
        stream_posts(small_world.posts, NearlineConfig(index="IVFPQ"))


@pytest.fixture
def ray_session():
    import ray

    yield
    ray.shutdown()


def test_killed_actor_loses_and_duplicates_nothing(small_world, ray_session):
    """Kill a real actor mid-stream: its batch is retried on a replacement actor, and every
    post ends up in the store and the index exactly once, with the encoder's own vector."""
    import ray

    posts = small_world.posts.sort("created_at", "post_id").head(64)
    cfg = NearlineConfig(rate=400.0, max_batch=8, max_wait_s=0.05, queue_size=8, index="HNSW",
                         pool=ActorPoolConfig(num_actors=2, threads_per_actor=1, encoder=TINY))
    killed = []

    def kill_once(pool, n_done):
        if not killed and n_done >= 16 and pool.in_flight:
            killed.append(n_done)
            ray.kill(pool.actors[0])

    result, store, index = stream_posts(posts, cfg, on_batch=kill_once)
    assert killed, "the test never killed an actor"
    assert result.restarts >= 1 and result.retries >= 1  # a batch died with its actor
    assert result.max_queue <= cfg.queue_size  # bounded: the producer waited instead
    ids = posts["post_id"].to_numpy()
    version = model_version(TINY)
    assert len(store) == len(ids) and store.n_writes == len(ids) and store.n_overwrites == 0
    assert index.ntotal == len(ids) and set(index.post_ids.tolist()) == set(ids.tolist())
    assert np.isfinite(result.searchable_s).all() and (result.freshness_s > 0).all()

    reference = embed_batch(load_encoder(TINY), posts["text"].to_list())
    stored = np.stack([store.get(i, version) for i in ids])
    assert np.allclose((reference * stored).sum(axis=1), 1.0, atol=1e-4)
    top = index.search(ids, stored, k=1)
    assert top["post_id"].to_list() == ids.tolist()  # each post finds itself first


def test_nearline_config_composes_and_takes_ray_address():
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from recsim.paths import CONF_DIR

    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        cfg = instantiate(compose("nearline", overrides=["ray.address=ray://head:10001"]).nearline)
        main = instantiate(compose("config", overrides=["ray.address=auto"]).embeddings)
    assert isinstance(cfg, NearlineConfig) and isinstance(cfg.pool, ActorPoolConfig)
    assert isinstance(cfg.pool.encoder, EncoderConfig)
    assert cfg.pool.address == "ray://head:10001" and main.address == "auto"
