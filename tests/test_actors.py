"""Ray actors: length bucketing, and batch mode (parquet to parquet, resumable) on real actors."""

import numpy as np
import polars as pl
import pytest

from embeddings.actors import ActorPoolConfig, embed_posts_to_parquet, length_bucketed_batches
from embeddings.encoder import EncoderConfig, embed_batch, load_encoder


def test_length_bucketed_batches_cover_every_text_once():
    texts = ["a", "bbbb", "cc", "ddd", "eeeee"]
    batches = length_bucketed_batches(texts, 2)
    positions = np.concatenate([p for p, _ in batches])
    assert sorted(positions.tolist()) == list(range(5))
    assert batches[0][1] == ["eeeee", "bbbb"]  # longest first, similar lengths together
    for pos, batch in batches:
        assert [texts[i] for i in pos] == batch


@pytest.fixture
def ray_session():
    import ray

    yield
    ray.shutdown()  # leave no cluster behind for tests that start their own


def test_batch_mode_embeds_each_post_once_and_resumes(tmp_path, small_corpus, ray_session):
    cfg = ActorPoolConfig(num_actors=1, threads_per_actor=1,
                          encoder=EncoderConfig(num_layers=2, batch_size=16, precision="fp32"))
    posts = small_corpus.select("post_id", "text").head(40)
    posts.head(25).write_parquet(tmp_path / "posts.parquet")
    out = tmp_path / "embeddings.parquet"
    first = embed_posts_to_parquet(tmp_path / "posts.parquet", out, cfg, "minilm-2l")
    assert first.height == 25

    posts.write_parquet(tmp_path / "posts.parquet")  # 15 new posts arrive
    second = embed_posts_to_parquet(tmp_path / "posts.parquet", out, cfg, "minilm-2l")
    assert second.height == 15
    stored = pl.read_parquet(out)
    assert stored.height == 40 and stored["post_id"].n_unique() == 40

    # The stored vectors are the encoder's own, in the right rows.
    reference = embed_batch(load_encoder(cfg.encoder), posts["text"].head(3).to_list())
    got = np.stack(stored.head(3)["vector"].to_list())
    assert np.allclose((reference * got).sum(axis=1), 1.0, atol=1e-4)

    assert embed_posts_to_parquet(tmp_path / "posts.parquet", out, cfg, "minilm-2l").height == 0


@pytest.mark.parametrize(
    "frame, message",
    [
        (pl.DataFrame({"post_id": [1, 2]}), "column 'text' is missing"),
        (pl.DataFrame({"post_id": [1, 1], "text": ["a", "b"]}), "duplicate ids"),
        (pl.DataFrame({"post_id": ["1"], "text": ["a"]}), "column 'post_id' has dtype String"),
        (pl.DataFrame({"post_id": [], "text": []}, schema={"post_id": pl.Int64, "text": pl.String}),
         "posts table is empty"),
    ],
)
def test_batch_mode_bad_input(tmp_path, frame, message):
    frame.write_parquet(tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match=message) as err:
        embed_posts_to_parquet(tmp_path / "bad.parquet", tmp_path / "out.parquet", ActorPoolConfig(), "v")
    assert "bad.parquet" in str(err.value)
    assert not (tmp_path / "out.parquet").exists()
