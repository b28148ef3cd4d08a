"""The text world (world.affinity=topics): fine topic mixtures read from the posts, member
preferences over them, an affinity that depends on the text, and a default world left as it was."""

import dataclasses
import os

import numpy as np
import polars as pl
import pytest

from recsim.world import topics
from recsim.world.world import WorldConfig, build_world

N_FINE = 12  # small enough for the 2,400-post test corpus to fit in a few seconds


@pytest.fixture(scope="module")
def text_world(small_corpus, small_world_config):
    cfg = dataclasses.replace(small_world_config, affinity="topics", n_fine_topics=N_FINE)
    return build_world(cfg, corpus=small_corpus)


@pytest.fixture(scope="module")
def label_world(small_corpus, small_world_config):
    return build_world(small_world_config, corpus=small_corpus)


def test_topic_mixtures_are_distributions_and_an_empty_text_is_uniform(small_corpus):
    texts = small_corpus["text"].to_list()[:600] + ["", "1234 56"]
    mixture = topics.fit_topic_mixtures(texts, n_topics=8, seed=0)
    assert mixture.shape == (602, 8)
    assert (mixture >= 0).all()
    np.testing.assert_allclose(mixture.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_array_equal(mixture[-2:], 1 / 8)  # no word of the vocabulary
    assert np.median(mixture[:600].max(axis=1)) > 2 / 8  # real posts lean on some topics
    again = topics.fit_topic_mixtures(texts, n_topics=8, seed=0)
    np.testing.assert_array_equal(mixture, again)


def test_topic_mixtures_are_cached_per_corpus(small_corpus, tmp_path):
    rows = small_corpus.head(500)
    ids, texts = rows["post_id"].to_numpy(), rows["text"].to_list()
    first = topics.post_topic_mixtures(ids, texts, 6, 0, tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 1
    np.testing.assert_array_equal(topics.post_topic_mixtures(ids, texts, 6, 0, tmp_path), first)
    topics.post_topic_mixtures(ids, texts[:-1] + ["another text"], 6, 0, tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 2  # another corpus, another entry
    with pytest.raises(ValueError, match="500 post ids but 499 texts"):
        topics.post_topic_mixtures(ids, texts[:-1], 6, 0, tmp_path)


def test_member_preferences_center_on_label_interests():
    """Members with the same label interests: preferences are distributions, and their mean is
    the interests carried to fine topics through each label's mean mixture (hand-computed)."""
    mixture = np.array([[0.8, 0.2, 0.0], [0.6, 0.4, 0.0], [0.0, 0.1, 0.9]])
    post_topic = np.array([0, 0, 1])
    interests = np.tile([0.25, 0.75], (20_000, 1))
    pref = topics.member_preferences(interests, post_topic, mixture, 1.0,
                                     np.random.default_rng(0))
    np.testing.assert_allclose(pref.sum(axis=1), 1.0, atol=1e-12)
    expected = 0.25 * np.array([0.7, 0.3, 0.0]) + 0.75 * np.array([0.0, 0.1, 0.9])
    np.testing.assert_allclose(pref.mean(axis=0), expected, atol=0.01)


def test_affinity_scale_matches_the_label_affinity_over_all_pairs():
    rng = np.random.default_rng(3)
    interests = rng.dirichlet(np.full(4, 0.3), size=30)
    post_topic = rng.integers(0, 4, size=50)
    pref, mixture = rng.dirichlet(np.ones(6), size=30), rng.dirichlet(np.ones(6) * 0.2, size=50)
    shift, scale = topics.affinity_scale(interests, post_topic, pref, mixture)
    fine = shift + scale * (pref @ mixture.T)  # [30, 50] every pair, by brute force
    label = interests[:, post_topic]
    assert fine.mean() == pytest.approx(label.mean(), rel=1e-9)
    assert fine.std() == pytest.approx(label.std(), rel=1e-9)


def test_pair_dot_in_chunks_equals_the_full_product():
    rng = np.random.default_rng(1)
    a, b = rng.random((7, 5)), rng.random((9, 5))
    m, p = rng.integers(0, 7, size=(13, 1)), rng.integers(0, 9, size=(13, 4))
    full = (a @ b.T)[np.broadcast_to(m, p.shape), p]
    np.testing.assert_allclose(topics.pair_dot(a, b, m, p, chunk=5), full, rtol=1e-12)


def test_affinity_depends_on_the_text(text_world, label_world):
    """Two posts of one label: equal affinity for a member in the label world, different (and
    equal to shift + scale * pref . mixture) in the text world."""
    truth, label_truth = text_world.truth, label_world.truth
    label = truth.post_topic
    p1, p2 = np.flatnonzero(label == np.bincount(label).argmax())[:2]
    assert not np.allclose(truth.post_fine[p1], truth.post_fine[p2])
    members = np.arange(20)
    same = label_truth.topic_affinity(members, np.full(20, p1))
    np.testing.assert_array_equal(same, label_truth.topic_affinity(members, np.full(20, p2)))
    a1 = truth.topic_affinity(members, np.full(20, p1))
    a2 = truth.topic_affinity(members, np.full(20, p2))
    assert np.abs(a1 - a2).max() > 0.05
    shift, scale = truth.fine_affine
    np.testing.assert_allclose(a1, shift + scale * truth.fine_pref[members] @ truth.post_fine[p1])


def test_text_world_engagement_follows_the_fine_affinity_within_a_label(text_world):
    """Among shown posts of one label, clicks rise with the text affinity: the truth reads more
    than the label."""
    truth, imp = text_world.truth, text_world.impressions
    m = truth.member_index(imp["member_id"].to_numpy())
    p = truth.post_index(imp["post_id"].to_numpy())
    frame = imp.with_columns(affinity=truth.topic_affinity(m, p), label=truth.post_topic[p])
    top_label = frame["label"].mode()[0]
    rates = (frame.filter(pl.col("label") == top_label)
             .with_columns(bucket=pl.col("affinity").qcut(3, labels=["q1", "q2", "q3"]))
             .group_by("bucket").agg(pl.col("click").mean()).sort("bucket"))
    assert rates["click"].is_sorted() and rates["click"][-1] > 1.5 * rates["click"][0]


def test_text_world_is_seeded(small_corpus, text_world):
    cfg = text_world.config
    again = build_world(cfg, corpus=small_corpus)
    assert again.impressions.equals(text_world.impressions)
    np.testing.assert_array_equal(again.truth.fine_pref, text_world.truth.fine_pref)
    other = build_world(dataclasses.replace(cfg, seed=cfg.seed + 1), corpus=small_corpus)
    assert not other.impressions.equals(text_world.impressions)
    np.testing.assert_array_equal(other.truth.post_fine, text_world.truth.post_fine)  # corpus only


def test_text_world_shares_every_draw_but_the_truth(text_world, label_world):
    """Members, requests and candidates are the label world's; the slates and outcomes are not."""
    assert text_world.members.equals(label_world.members)
    assert text_world.posts.equals(label_world.posts)
    cols = ["request_id", "post_id"]
    assert text_world.candidates.select(cols).equals(label_world.candidates.select(cols))
    assert not text_world.impressions.equals(label_world.impressions)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("affinity", "text", "world.affinity: must be one of ['label', 'topics'], got 'text'"),
    ("n_fine_topics", 0, "world.n_fine_topics: must be >= 1, got 0"),
    ("fine_concentration", 0.0, "world.fine_concentration: must be > 0, got 0.0"),
])
def test_bad_text_world_settings_name_their_key(field, value, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        WorldConfig(**{field: value})


def test_default_world_is_unchanged():
    """The default config's world, fingerprinted before the text world existed (main at 29d739e,
    polars 1.x `hash_rows(seed=0)`): the label world's every draw is as it was."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from recsim.paths import CONF_DIR
    from recsim.report.writer import fingerprint

    with initialize_config_dir(config_dir=os.path.abspath(CONF_DIR), version_base=None):
        cfg = instantiate(compose("config").world)
    assert cfg.affinity == "label"
    world = build_world(cfg)
    assert fingerprint(world.impressions) == "72dbb51f4fdd3b7b"
    assert fingerprint(world.candidates) == "29a6fc110823010d"
