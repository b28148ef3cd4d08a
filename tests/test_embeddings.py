"""LiPost fine-tuning pieces: the text tower, loss, tasks, a short real training run, saving, precision."""

import numpy as np
import pytest
import torch

from embeddings.encoder import EncoderConfig, default_model_dir, embed_batch, load_encoder, pool
from embeddings.evaluate import knn_predict, label_ranks
from embeddings.losses import info_nce
from embeddings.tasks import build_task
from embeddings.train import TrainConfig, train


@pytest.fixture(scope="module")
def tasks(small_corpus):
    return {name: build_task(name, small_corpus, min_label_count=5)
            for name in ("clothing_department", "newsgroup_topic")}


def _tiny_config(**overrides):
    base = dict(num_layers=2, steps=12, batch_size=12, learning_rate=2e-4, warmup_steps=2,
                max_length=32, validation_batches=2, checkpoint_every=6, seed=3)
    base.update(overrides)
    return TrainConfig(**base)


def test_text_tower_embeds_what_it_encodes_and_what_the_encoder_embeds():
    """The training tower's no-grad vectors: its own forward normalised, in input order across
    length-sorted batches, equal to embeddings/encoder.py's inference vectors (fp32)."""
    from embeddings.tower import TextTower

    texts = ["a hockey playoff game went to overtime", "short", "Love this dress, fits perfectly",
             "The sleeves run long", "ok"]
    tower = TextTower.load(num_layers=2, precision="fp32")
    tower.model.train()
    vectors = tower.embed(texts, max_length=32, batch_size=2)
    assert tower.model.training  # the mode is restored
    tower.model.eval()
    with torch.no_grad():
        one_batch = torch.nn.functional.normalize(tower.encode(texts, 32), dim=-1).numpy()
    assert vectors.shape == (5, tower.dim) and np.allclose(vectors, one_batch, atol=1e-6)
    reference = embed_batch(load_encoder(EncoderConfig(num_layers=2, precision="fp32", max_length=32)), texts)
    assert np.allclose(vectors, reference, atol=1e-5)
    with pytest.raises(ValueError, match="training.pooling: must be one of"):
        TextTower.load(pooling="max", field="training")
    with pytest.raises(ValueError, match="tower.precision: must be one of"):
        TextTower.load(precision="fp16")


def test_loss_is_lower_for_aligned_pairs_than_shuffled(tasks):
    encoder = load_encoder(EncoderConfig(precision="fp32"))
    rng = np.random.default_rng(0)
    anchors, positives, labels = tasks["newsgroup_topic"].sample_pairs(rng, 16, "label")
    a = torch.from_numpy(embed_batch(encoder, anchors))
    p = torch.from_numpy(embed_batch(encoder, positives))
    shuffled = p[torch.from_numpy(rng.permutation(16))]
    assert float(info_nce(a, p, None)) < float(info_nce(a, shuffled, None))


def test_tasks_pair_texts_with_their_label(tasks):
    task = tasks["newsgroup_topic"]
    assert len(task.labels) == len(task.descriptions) >= 2
    rng = np.random.default_rng(1)
    anchors, positives, labels = task.sample_pairs(rng, 8, "text")
    train = task.splits["train"]
    label_of = dict(zip(train["text"], train["label_index"]))
    assert [label_of[p] for p in positives] == labels.tolist()
    _, descriptions, labels = task.sample_pairs(rng, 8, "label")
    assert descriptions == [task.descriptions[i] for i in labels]
    with pytest.raises(ValueError, match="unknown task 'weather'"):
        build_task("weather", task.splits["train"])


def test_short_training_lowers_validation_loss_and_saves_a_loadable_model(tasks, tmp_path):
    from sentence_transformers import SentenceTransformer

    result = train({"clothing_department": tasks["clothing_department"]}, _tiny_config(), tmp_path)
    assert result.validation_loss_after < result.validation_loss_before
    assert not (tmp_path / "checkpoint.pt").exists()
    assert "Training config" in (tmp_path / "README.md").read_text()

    texts = ["Love this dress, fits perfectly", "The sleeves run long", "a hockey playoff game"]
    ours = embed_batch(load_encoder(EncoderConfig(model_dir=str(tmp_path), precision="fp32")), texts)
    theirs = SentenceTransformer(str(tmp_path), device="cpu").encode(texts)
    assert np.allclose((ours * theirs).sum(axis=1), 1.0, atol=1e-4)
    short = SentenceTransformer(str(tmp_path), device="cpu", truncate_dim=64).encode(texts)
    assert short.shape == (3, 64)


def test_interrupted_training_resumes_to_the_same_weights(tasks, tmp_path, monkeypatch):
    task = {"clothing_department": tasks["clothing_department"]}
    cfg = _tiny_config(steps=6, checkpoint_every=3, batch_size=4, validation_batches=1)
    train(task, cfg, tmp_path / "straight")

    calls = {"n": 0}
    original = type(task["clothing_department"]).sample_pairs

    def crash_at_step_five(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2 * cfg.validation_batches + 5:  # validation batches, then 4 steps
            raise KeyboardInterrupt("simulated interruption")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(task["clothing_department"]), "sample_pairs", crash_at_step_five)
    with pytest.raises(KeyboardInterrupt):
        train(task, cfg, tmp_path / "resumed")
    assert (tmp_path / "resumed" / "checkpoint.pt").exists()
    monkeypatch.setattr(type(task["clothing_department"]), "sample_pairs", original)
    result = train(task, cfg, tmp_path / "resumed")
    assert result.resumed_from == 3

    a = load_encoder(EncoderConfig(model_dir=str(tmp_path / "straight"), precision="fp32")).model
    b = load_encoder(EncoderConfig(model_dir=str(tmp_path / "resumed"), precision="fp32")).model
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.allclose(x, y, atol=1e-6), name


def test_bf16_vectors_agree_with_fp32(small_corpus):
    texts = small_corpus["text"].head(32).to_list()
    fp32 = embed_batch(load_encoder(EncoderConfig(precision="fp32")), texts)
    bf16 = embed_batch(load_encoder(EncoderConfig(precision="bf16")), texts)
    assert (fp32 * bf16).sum(axis=1).min() >= 0.999


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_openvino_backend_agrees_with_torch_fp32(small_corpus, precision):
    """The OpenVINO CPU path gives the reference (torch fp32) vectors, texts of mixed length."""
    texts = small_corpus["text"].head(24).to_list() + ["short", "a " * 300]
    reference = embed_batch(load_encoder(EncoderConfig(num_layers=2, precision="fp32")), texts)
    encoder = load_encoder(EncoderConfig(num_layers=2, precision=precision, backend="openvino"))
    assert encoder.backend == "openvino" and encoder.compiled is not None
    vectors = embed_batch(encoder, texts)
    assert vectors.shape == reference.shape
    assert (vectors * reference).sum(axis=1).min() >= 0.999


def test_unknown_backend_fails_clearly():
    with pytest.raises(ValueError, match="embeddings.encoder.backend: must be one of"):
        load_encoder(EncoderConfig(num_layers=2, backend="onnx"))


def test_pooling_modes_with_right_padding():
    hidden = torch.arange(12, dtype=torch.float32).reshape(1, 4, 3).repeat(2, 1, 1)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    assert torch.equal(pool(hidden, mask, "cls"), hidden[:, 0])
    assert torch.equal(pool(hidden, mask, "last"), torch.stack([hidden[0, 3], hidden[1, 1]]))
    assert torch.allclose(pool(hidden, mask, "mean")[1], hidden[1, :2].mean(dim=0))


def test_last_token_pooling_on_a_tiny_causal_lm(tmp_path):
    from transformers import AutoTokenizer, GPT2Config, GPT2Model

    GPT2Model(GPT2Config(n_layer=1, n_head=2, n_embd=32, vocab_size=30522)).save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(default_model_dir()).save_pretrained(tmp_path)
    encoder = load_encoder(EncoderConfig(model_dir=str(tmp_path), pooling="last", precision="fp32"))
    vectors = embed_batch(encoder, ["a short post", "a somewhat longer post about hockey"])
    assert vectors.shape == (2, 32)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_knn_and_label_ranks_known_answers():
    support = np.array([[1, 0], [0.9, 0.1], [0, 1.0]])
    support /= np.linalg.norm(support, axis=1, keepdims=True)
    test = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert knn_predict(test, support, np.array([0, 0, 1]), 2, k=1).tolist() == [0, 1]
    labels = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert label_ranks(test, labels, np.array([0, 0])).tolist() == [1, 2]
    # leave-one-out: each support vector's own vote is gone, so its nearest other one decides
    # (the two near (1, 0) vote for each other; (0, 1)'s nearest other is (0.9, 0.1), label 0)
    assert knn_predict(support, support, np.array([0, 0, 1]), 2, k=1).tolist() == [0, 0, 1]
    assert knn_predict(support, support, np.array([0, 0, 1]), 2, k=1,
                       leave_one_out=True).tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="leave_one_out"):
        knn_predict(test, support, np.array([0, 0, 1]), 2, k=1, leave_one_out=True)


def test_a_task_without_validation_texts_is_left_out_of_the_validation_loss():
    """A small task's cross-validation fold can have no validation texts (parl_agenda_es)."""
    import numpy as np
    import polars as pl

    from embeddings.tasks import Task
    from embeddings.train import TrainConfig, validation_batches

    texts = pl.DataFrame({"text": ["a", "b", "c", "d"], "label_index": [0, 1, 0, 1]})
    full = Task("full", ["x", "y"], ["X", "Y"], {"train": texts, "validation": texts, "test": texts})
    empty = Task("empty", ["x", "y"], ["X", "Y"], {"train": texts, "validation": texts.head(0), "test": texts})
    batches = validation_batches({"full": full, "empty": empty}, TrainConfig(batch_size=2, validation_batches=2))
    assert len(batches) == 2 and all(set(b[0]) <= {"a", "b", "c", "d"} for b in batches)
    with pytest.raises(ValueError, match="task empty: no validation texts"):
        empty.sample_pairs(np.random.default_rng(0), 2, "text", split="validation")


def test_weight_ensemble_interpolates_a_fine_tune_with_its_base(tasks, tmp_path):
    """WiSE-FT: alpha 0 is the base, 1 the fine-tune, 0.5 the midpoint of every weight."""
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer

    from embeddings.train import weight_ensemble

    base = tmp_path / "base"  # a 2-layer MiniLM, so the fine-tune has the same parameters
    AutoModel.from_pretrained(default_model_dir(), num_hidden_layers=2).save_pretrained(base)
    AutoTokenizer.from_pretrained(default_model_dir()).save_pretrained(base)
    tuned = tmp_path / "tuned"
    train({"clothing_department": tasks["clothing_department"]},
          _tiny_config(base_model_dir=str(base), num_layers=None, steps=3, validation_batches=1), tuned)

    mid = weight_ensemble(base, tuned, 0.5, tmp_path / "mid")
    b, t, m = (load_file(d / "model.safetensors") for d in (base, tuned, mid))
    moved = [k for k in t if not torch.equal(b[k], t[k])]
    assert moved and "embeddings.word_embeddings.weight" not in moved  # frozen table stays
    for k in t:
        assert torch.allclose(m[k], (b[k] + t[k]) / 2, atol=1e-6), k
    assert "WiSE-FT" in (mid / "README.md").read_text()

    texts = ["Love this dress, fits perfectly", "The sleeves run long"]

    def vectors(model_dir):
        return embed_batch(load_encoder(EncoderConfig(model_dir=str(model_dir), precision="fp32")), texts)

    for alpha, same_as in ((0.0, base), (1.0, tuned)):
        mixed = weight_ensemble(base, tuned, alpha, tmp_path / f"a{alpha}")
        assert np.allclose(vectors(mixed), vectors(same_as), atol=1e-5)
    stamp = (mid / "model.safetensors").stat().st_mtime_ns
    weight_ensemble(base, tuned, 0.5, mid)  # the same mix again: reused, not rewritten
    assert (mid / "model.safetensors").stat().st_mtime_ns == stamp

    with pytest.raises(ValueError, match="not a fine-tune of"):
        weight_ensemble(default_model_dir(), tuned, 0.5, tmp_path / "six_layers")  # 6 layers vs 2
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        weight_ensemble(base, tuned, 1.5, tmp_path / "bad")
