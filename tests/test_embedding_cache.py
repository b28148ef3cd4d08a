"""The embedding cache: hits skip the encoder, a corrupt shard is recomputed, keys follow the model."""

import numpy as np
import pytest

from embeddings.cache import cached_embed, model_key, text_hashes


def _fake_encoder(calls):
    def embed(texts):
        calls.append(list(texts))
        return np.stack([np.full(4, float(len(t)), dtype=np.float32) for t in texts])
    return embed


def test_second_call_hits_and_returns_the_same_vectors(tmp_path):
    calls = []
    texts = ["a post", "another post", "a post", "third"]
    first, hits = cached_embed(texts, _fake_encoder(calls), tmp_path)
    assert hits == 0 and calls == [["a post", "another post", "third"]]  # duplicates embedded once
    again, hits = cached_embed(["third", "a post", "new one"], _fake_encoder(calls), tmp_path)
    assert hits == 2 and calls[-1] == ["new one"]
    assert np.array_equal(again[:2], first[[3, 0]])
    assert np.array_equal(cached_embed(texts, _fake_encoder(calls), tmp_path)[0], first)
    assert len(calls) == 2  # the third call embedded nothing


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_corrupt_shard_is_detected_deleted_and_recomputed(tmp_path, damage):
    calls = []
    cached_embed(["x", "yy"], _fake_encoder(calls), tmp_path)
    (shard,) = tmp_path.glob("*.npz")
    data = shard.read_bytes()
    if damage == "truncate":
        shard.write_bytes(data[: len(data) // 2])
    else:  # change the vectors' bytes but keep a valid zip: caught by the checksum
        with np.load(shard) as z:
            h, v, c = z["hashes"], z["vectors"].copy(), z["checksum"]
        v[0, 0] += 1
        np.savez(shard, hashes=h, vectors=v, checksum=c)
    vectors, hits = cached_embed(["x", "yy"], _fake_encoder(calls), tmp_path)
    assert hits == 0 and calls[-1] == ["x", "yy"]
    assert vectors[:, 0].tolist() == [1.0, 2.0]
    assert not shard.exists()  # replaced by a fresh shard


def test_keys_change_with_anything_a_vector_depends_on(tmp_path):
    from embeddings.config import EncoderConfig

    model = tmp_path / "m"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"weights")
    base = model_key(EncoderConfig(), str(model), "cpu-bf16-torch")
    assert base == model_key(EncoderConfig(), str(model), "cpu-bf16-torch")
    assert base != model_key(EncoderConfig(max_length=64), str(model), "cpu-bf16-torch")
    assert base != model_key(EncoderConfig(text_prefix="passage: "), str(model), "cpu-bf16-torch")
    assert base != model_key(EncoderConfig(), str(model), "cuda-float32-torch")
    other = tmp_path / "n"
    other.mkdir()
    (other / "model.safetensors").write_bytes(b"other weights")
    assert base != model_key(EncoderConfig(), str(other), "cpu-bf16-torch")
    assert text_hashes(["a"])[0] != text_hashes(["b"])[0]
