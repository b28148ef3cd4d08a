"""The English LiPost comparison's recipe and method: gradient caching, temperature task sampling,
hard negatives, folds shared across tasks, paired differences and targets."""

import numpy as np
import polars as pl
import pytest
import torch

from embeddings.gradcache import cached_backward
from embeddings.losses import matryoshka_info_nce
from embeddings.tasks import Task, build_task
from embeddings.train import TrainConfig, backward, task_probabilities


def _toy_task(train: pl.DataFrame, name: str = "toy") -> Task:
    labels = sorted(set(train["label_index"].to_list()))
    return Task(name, [str(i) for i in labels], [f"label {i}" for i in labels],
                {"train": train, "validation": train.head(0), "test": train.head(0)})


# --- gradient caching ---------------------------------------------------------------------------

def test_grad_cache_gives_the_whole_batch_gradient_in_fp64():
    """A linear encoder over fixed features, fp64: the cached gradient equals the plain one to
    rounding, for anchors, positives and hard negatives with label masks and Matryoshka dims."""
    gen = torch.Generator().manual_seed(0)
    features = {f"t{i}": torch.randn(12, generator=gen, dtype=torch.float64) for i in range(30)}
    encoder = torch.nn.Linear(12, 8, dtype=torch.float64)

    def encode(texts):
        return encoder(torch.stack([features[t] for t in texts]))

    groups = [[f"t{i}" for i in range(10)], [f"t{i}" for i in range(10, 20)], [f"t{i}" for i in range(20, 30)]]
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 3])
    exclude = torch.cat([torch.zeros(10, 10, dtype=torch.bool),
                         labels[:, None] == torch.tensor([1, 2, 0, 3, 1, 2, 0, 1, 2, 0])[None, :]], dim=1)

    def loss_fn(a, p, n):
        return matryoshka_info_nce(a, p, labels, [8, 4], 20.0, negatives=n, exclude=exclude)

    plain = loss_fn(*[encode(g) for g in groups])
    plain.backward()
    expected = [p.grad.clone() for p in encoder.parameters()]
    encoder.zero_grad()
    cached = cached_backward(encode, groups, loss_fn, mini_batch=3)
    assert float(cached) == pytest.approx(plain.item(), abs=1e-12)
    for got, want in zip((p.grad for p in encoder.parameters()), expected):
        assert torch.allclose(got, want, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="training.mini_batch_size: must be >= 1"):
        cached_backward(encode, groups, loss_fn, mini_batch=0)


@pytest.fixture(scope="module")
def tower():
    from embeddings.tower import TextTower

    return TextTower.load(num_layers=1, precision="fp32")


def _batch():
    anchors = ["a hockey playoff game went to overtime", "the dress fits perfectly", "crude oil prices fell",
               "a short one", "the sleeves run long and the fabric is thin", "rates rise again"]
    positives = ["overtime goal wins the series", "love this dress", "oil output cut", "tiny",
                 "fabric too thin", "the central bank raised interest rates"]
    negatives = ["baseball season opener", "the skirt is too short", "gold prices rose", "long text " * 5,
                 "sleeves fit well", "stocks rally"]
    return anchors, positives, np.array([0, 1, 2, 3, 1, 2]), negatives, np.array([1, 2, 0, 0, 3, 1])


def _grads(tower):
    """The trainable parameters' gradients (the pooler, unused by mean pooling, has none)."""
    return [p.grad.clone() for p in tower.trainable_parameters() if p.grad is not None]


def test_grad_cache_equals_the_plain_loss_gradient_of_the_text_tower(tower):
    """fp32, no dropout: train.backward with mini-batches of 4 texts gives the gradient of the
    whole batch at once (texts padded per mini-batch instead of per batch)."""
    cfg = TrainConfig(batch_size=6, max_length=24, matryoshka_dims=[384, 64])
    tower.model.eval()
    tower.model.zero_grad()
    plain = backward(tower, cfg, _batch())
    expected = _grads(tower)
    tower.model.zero_grad()
    cached = backward(tower, TrainConfig(batch_size=6, max_length=24, matryoshka_dims=[384, 64],
                                         mini_batch_size=4), _batch())
    assert float(cached) == pytest.approx(float(plain), rel=1e-5)
    scale = max(float(g.abs().max()) for g in expected)
    assert scale > 0 and len(expected) == len(_grads(tower)) >= 16  # a layer and the embeddings' norms
    for got, want in zip(_grads(tower), expected):
        assert torch.allclose(got, want, rtol=1e-3, atol=1e-5 * scale)


def test_grad_cache_replays_the_dropout_masks(tower):
    """In train mode (dropout on) the cached gradient equals that of the same mini-batches
    embedded once with a graph from the same RNG state, and the RNG ends where that one did."""
    anchors, positives, labels, _, _ = _batch()
    labels = torch.as_tensor(labels)

    def encode(texts):
        return tower.encode(texts, 24)

    def loss_fn(a, p):
        return matryoshka_info_nce(a, p, labels, [384], 20.0)

    tower.model.train()
    torch.manual_seed(5)
    tower.model.zero_grad()
    reps = [torch.cat([encode(g[i: i + 4]) for i in range(0, 6, 4)]) for g in (anchors, positives)]
    loss_fn(*reps).backward()
    expected, state = _grads(tower), torch.get_rng_state()
    torch.manual_seed(5)
    tower.model.zero_grad()
    cached_backward(encode, [anchors, positives], loss_fn, mini_batch=4)
    assert torch.equal(torch.get_rng_state(), state)
    for got, want in zip(_grads(tower), expected):
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-7)
    tower.model.eval()


# --- task sampling and hard negatives -----------------------------------------------------------

def test_temperature_sampling_probabilities():
    """p(task) ~ n_task ** (1 / T): sizes 100 and 400 give 1:2 at T = 2, 1:4 at T = 1."""
    def sized(n):
        return _toy_task(pl.DataFrame({"text": [f"x{i}" for i in range(n)], "label_index": [i % 2 for i in range(n)]}))

    tasks = {"small": sized(100), "large": sized(400)}
    probs = lambda **kw: task_probabilities(tasks, TrainConfig(**kw)).tolist()  # noqa: E731
    assert probs(sampling="temperature", sampling_temperature=2.0) == pytest.approx([1 / 3, 2 / 3])
    assert probs(sampling="temperature", sampling_temperature=1.0) == pytest.approx([0.2, 0.8])
    assert probs(sampling="proportional") == pytest.approx([0.2, 0.8])
    assert probs(sampling="round_robin") == pytest.approx([0.5, 0.5])
    assert probs(sampling="temperature", sampling_temperature=1e6) == pytest.approx([0.5, 0.5], abs=1e-5)


def test_hard_negatives_are_other_label_texts_of_the_same_task():
    from embeddings.negatives import other_label_neighbours

    texts = ["hockey game overtime goal", "hockey game tonight", "stock market rally", "hockey overtime win",
             "bond market yields", "market rally stocks", "baseball game tonight", "oil market prices"]
    labels = np.array([0, 1, 1, 0, 1, 1, 2, 1])
    # the nearest other-label text of the first hockey post is the other hockey game (label 1)
    table = other_label_neighbours(texts, labels, pool=1)
    assert table[0, 0] == 1 and table[3, 0] == 1
    assert (labels[table[:, 0]] != labels).all()
    full = other_label_neighbours(texts, labels, pool=10)
    assert ((full == -1).sum(axis=1) == 10 - (labels[:, None] != labels[None, :]).sum(axis=1)).all()

    task = _toy_task(pl.DataFrame({"text": texts, "label_index": labels}))
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(50):
        anchors, positives, a_labels, negatives, n_labels = task.sample_triplets(rng, 6, pool=3)
        label_of = dict(zip(texts, labels))
        assert [label_of[t] for t in anchors] == a_labels.tolist() == [label_of[t] for t in positives]
        assert [label_of[t] for t in negatives] == n_labels.tolist()
        assert (n_labels != a_labels).all() and set(negatives) <= set(texts)
        seen |= set(negatives)
    assert len(seen) >= 5  # drawn from a pool, not always the nearest
    one_label = _toy_task(pl.DataFrame({"text": ["a", "b"], "label_index": [0, 0]}))
    with pytest.raises(ValueError, match="no text with another label"):
        one_label.sample_triplets(rng, 2, pool=3)


def test_single_task_budget_matches_the_multi_task_exposure():
    from embeddings.lipost import single_task_budget

    budget = single_task_budget({"a": 0.25, "b": 0.75, "c": 0.001}, steps=100, warmup_steps=20)
    assert budget == {"a": (25, 5), "b": (75, 15), "c": (1, 1)}


# --- folds, predictions, differences ------------------------------------------------------------

def test_folds_are_shared_across_tasks_and_each_text_is_predicted_once(small_corpus):
    from embeddings.crossval import TextVectors, fold_predictions
    from embeddings.evaluate import EvalConfig
    from embeddings.lipost import cv_views

    names = ("clothing_department", "review_rating", "newsgroup_topic")
    tasks = {n: build_task(n, small_corpus, min_label_count=5) for n in names}
    k = 3
    every = cv_views(tasks, k, seed=0, n_test=10**6)
    for name, task in tasks.items():
        texts = set(pl.concat(list(task.splits.values()))["text"])
        tests = [set(views[name].splits["test"]["text"]) for views in every]
        assert set().union(*tests) == texts and sum(map(len, tests)) == len(texts), name
    # the clothing tasks label the same reviews: a review held out of one is held out of the other
    for views in every:
        held_out = set(views["clothing_department"].splits["test"]["text"])
        rating = views["review_rating"]
        assert held_out == set(rating.splits["test"]["text"])
        assert not held_out & (set(rating.splits["train"]["text"]) | set(rating.splits["validation"]["text"]))

    capped = cv_views(tasks, k, seed=0, n_test=60)
    cfg = EvalConfig(n_support=50, knn_k=5, dims=[64])
    rng = np.random.default_rng(0)
    frames = []
    for f, views in enumerate(capped):
        assert all(v.splits["test"].height == 20 for v in views.values())
        assert set(views["clothing_department"].splits["test"]["text"]) == set(views["review_rating"].splits["test"]["text"])
        texts = list(dict.fromkeys(t for v in views.values() for s in v.splits.values() for t in s["text"]))
        texts += [d for v in views.values() for d in v.descriptions]
        vectors = rng.normal(size=(len(texts), 384)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        frames.append(fold_predictions(TextVectors(texts, vectors), views, cfg).with_columns(fold=pl.lit(f)))
    predictions = pl.concat(frames)
    counts = predictions.group_by("task", "text", "dim").len()
    assert counts["len"].max() == 1 and counts.height == 3 * 60 * 2  # 3 tasks, 60 texts, 2 dims


def _predictions(correct: dict) -> pl.DataFrame:
    """(model, task) -> per-text 0/1 correctness -> a predictions frame at dims 384 and 64 (64-d
    gets the same answers but the first one wrong)."""
    rows = []
    for (model, task), right in correct.items():
        for i, ok in enumerate(right):
            for dim in (384, 64):
                wrong = not ok or (dim == 64 and i == 0)
                rows.append({"model": model, "task": task, "dim": dim, "text": f"t{i}", "label": 0,
                             "pred": int(wrong), "rank": 1})
    return pl.DataFrame(rows)


def test_paired_differences_and_targets_by_hand():
    from embeddings.crossval import paired_bootstrap
    from embeddings.lipost import comparisons, differences, scores, targets

    diff, lo, hi = paired_bootstrap(np.ones(40), np.zeros(40), 300, seed=0)
    assert diff == lo == hi == 1.0  # a constant difference has no spread
    a, b = np.r_[np.ones(30), np.zeros(20)], np.r_[np.ones(20), np.zeros(30)]
    diff, lo, hi = paired_bootstrap(a, b, 2000, seed=0)
    assert diff == pytest.approx(0.2) and 0 < lo < 0.2 < hi  # 10 of 50 won, none lost
    # the same accuracies (30 vs 20 of 50) with 20 won and 10 lost: the same mean, a wider interval
    mixed = np.r_[np.zeros(20), np.ones(20), np.zeros(10)]
    diff2, lo2, hi2 = paired_bootstrap(a, mixed, 2000, seed=0)
    assert diff2 == pytest.approx(0.2) and hi2 - lo2 > 1.5 * (hi - lo)

    ten = lambda n: [1] * n + [0] * (10 - n)  # noqa: E731
    correct = {("multi-task-wise", "x"): ten(10), ("single-task-wise", "x"): ten(5),  # +0.5, all won
               ("multi-task-wise", "y"): ten(5), ("single-task-wise", "y"): ten(5),  # a tie
               ("multi-task-wise", "z"): ten(8), ("base", "z"): ten(8),  # zero-shot tie
               ("base", "x"): ten(4), ("base", "y"): ten(5)}
    predictions = _predictions(correct)
    table = scores(predictions)
    acc = {(r["model"], r["task"]): r for r in table.iter_rows(named=True)}
    assert acc[("multi-task-wise", "x")]["accuracy"] == 1.0 and acc[("multi-task-wise", "x")]["accuracy_64d"] == 0.9
    diffs = differences(predictions, comparisons(["x", "y"], ["z"]), 500, seed=0)
    row = diffs.filter(pl.col("model") == "multi-task-wise", pl.col("versus") == "single-task-wise",
                       pl.col("task") == "x").row(0, named=True)
    assert row["n"] == 10 and row["diff"] == pytest.approx(0.5) and row["ci_low"] > 0
    assert diffs.filter(pl.col("model") == "multi-task").height == 0  # not evaluated: skipped
    met = targets(diffs, table, ["x", "y"], ["z"], "multi-task-wise", "single-task-wise")
    assert met["transfer_interval_above_zero"] == ["x"] and met["transfer_interval_below_zero"] == []
    assert met["transfer_interval_not_below_zero"] == {"x": True, "y": True}
    assert met["positive_transfer_target_met"] is False  # above zero on 1 task, not 2 (min(4, 2))
    assert met["zero_shot_target_met"] is True  # a tie: 0 >= 0, interval [0, 0]
    assert met["accuracy_kept_at_64d"] == pytest.approx((0.9 + 0.4 + 0.7) / (1.0 + 0.5 + 0.8))
    assert met["matryoshka_64d_target_met"] is False


@pytest.mark.parametrize("override, message", [
    ("wise_alpha=1.5", r"wise_alpha: must be in \[0, 1\], got 1.5"),
    ("single_task_budget=equal", "single_task_budget: must be one of"),
    ("primary.multi=multi", r"primary: unknown models \['multi'\]"),
    ("folds=1", "folds must be >= 2"),
    ("only_folds=[3]", r"only_folds within 0..2"),
    ("model.num_layers=2", "model.num_layers: WiSE-FT mixes"),
    ("training.mini_batch_size=0", "training.mini_batch_size: must be >= 1"),
    ("training.hard_negative_pool=0", "training.hard_negative_pool: must be >= 1"),
    ("tasks.zero_shot=[newsgroup_topic]", r"tasks.zero_shot must not be trained on.*newsgroup_topic"),
])
def test_the_comparison_refuses_bad_settings_before_any_work(override, message):
    from hydra import compose, initialize_config_dir

    from recsim.jobs.finetune import check_configs
    from recsim.paths import conf_dir

    with initialize_config_dir(version_base="1.3", config_dir=conf_dir("finetune")):
        cfg = compose("finetune", overrides=[override])
    with pytest.raises(ValueError, match=message):
        check_configs(cfg)
