"""Member prompts (raw vs quantized numbers, point-in-time recent posts) and the dual encoder."""

import math

import numpy as np
import polars as pl
import pytest

from ranker.retrieval.dual_encoder import (DualEncoder, DualEncoderConfig, contrastive_loss,
                                 member_prompts_at, train_dual_encoder, training_examples)
from ranker.retrieval.prompts import PromptConfig, percentile_bucket, recent_posts_before, render_prompts
from ranker.retrieval.index import PostIndex, RetrievalConfig
from ranker.retrieval.recall import recall_at_k
from recsim.world.timeline import WORLD_START


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """OpenMP threads spin-wait when the cores are shared; one thread is several times faster."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_percentile_buckets_known_answers():
    reference = np.arange(1, 101)  # 1..100
    got = percentile_bucket(np.array([100, 96, 91, 80, 51, 50, 30, 11, 1]), reference)
    assert got == ["top 1%", "top 5%", "top 10%", "top 25%", "top 50%",
                   "bottom 50%", "bottom 50%", "bottom 25%", "bottom 10%"]


def _members():
    return pl.DataFrame({
        "member_id": [1, 2], "profile_text": ["Nurse practitioner. Interested in health.",
                                              "Retail buyer. Interested in shopping."],
        "connections": [5000, 3], "activity_level": [0.9, 0.1], "tenure_days": [10, 2000],
        "posts_per_week": [7.5, 0.0],
    })


def test_quantized_and_raw_prompts_render_as_expected():
    members = _members()
    reference = pl.concat([members] * 5)
    recent = [["flu season is here", "new vaccine trial"], []]
    quantized = render_prompts(members, recent, PromptConfig(numbers="quantized"), reference)
    assert quantized[0] == (
        "Member: Nurse practitioner. Interested in health.\n"
        "connections: top 50%; activity: top 50%; tenure: bottom 50%; posts per week: top 50%.\n"
        "Recently engaged with: flu season is here | new vaccine trial")
    assert quantized[1] == ("Member: Retail buyer. Interested in shopping.\n"
                            "connections: bottom 50%; activity: bottom 50%; tenure: top 50%; "
                            "posts per week: bottom 50%.")
    raw = render_prompts(members, recent, PromptConfig(numbers="raw"), reference)
    assert "connections: 5000; activity: 0.90; tenure: 10 days; posts per week: 7.50." in raw[0]
    none = render_prompts(members, recent, PromptConfig(numbers="none"), reference)
    assert none[1] == "Member: Retail buyer. Interested in shopping."
    with pytest.raises(ValueError, match="prompt.numbers: must be one of"):
        render_prompts(members, recent, PromptConfig(numbers="words"), reference)


def test_recent_posts_are_strictly_before_the_prompt_time(small_world):
    imps, posts = small_world.impressions, small_world.posts
    clicks = (imps.filter(pl.col("click")).sort("timestamp")
              .with_columns(t_hours=(pl.col("timestamp") - WORLD_START).dt.total_microseconds() / 3.6e9))
    member = clicks.group_by("member_id").len().sort("len", descending=True)["member_id"][0]
    mine = clicks.filter(pl.col("member_id") == member)
    t = float(mine["t_hours"][3])  # the 4th click's own time: only the first 3 may appear
    text_of = dict(zip(posts["post_id"].to_list(), posts["text"].to_list()))
    recent = recent_posts_before(imps, posts, pl.DataFrame({"member_id": [member], "t_hours": [t]}),
                                 "click", n_recent=5, chars=40)[0]
    expected = [" ".join(text_of[p].split())[:40] for p in mine["post_id"].to_list()[:3][::-1]]
    assert recent == expected


def test_loss_masks_false_negatives():
    import torch

    m = torch.eye(3)
    p = torch.eye(3)
    member_ids, post_ids = torch.tensor([1, 1, 2]), torch.tensor([10, 11, 12])
    neg_ids = torch.tensor([10, 99, 98])  # row 0's hard negative is its own positive: masked
    loss = contrastive_loss(m, p, torch.eye(3), member_ids, post_ids, neg_ids, scale=20.0)
    # Row 0 sees column 0 (target), not column 1 (same member) nor negative 0 (same post).
    assert float(loss) < float(contrastive_loss(m, p, torch.eye(3), torch.tensor([1, 2, 3]),
                                                post_ids, torch.tensor([97, 98, 99]), 20.0))
    # By hand at scale s: candidates [p0 p1 p2 n0 n1 n2] = [e0 e1 e2 e0 e1 e2]. Row 0 keeps
    # p0 (s), p2, n1, n2 (0 each); row 1 loses p0 (same member) and keeps p1 and n1 (s) and
    # three zeros; row 2 keeps all six, two of them at s.
    s = 2.0
    by_hand = (math.log(1 + 3 * math.exp(-s)) + math.log(2 + 3 * math.exp(-s))
               + math.log(2 + 4 * math.exp(-s))) / 3
    got = contrastive_loss(m, p, torch.eye(3), member_ids, post_ids, neg_ids, scale=s)
    assert float(got) == pytest.approx(by_hand, rel=1e-6)


def _recall(encoder, world, train_imps, held, members, split_h, cfg):
    prompts = member_prompts_at(train_imps, world.posts, world.members, members, split_h, cfg)
    index = PostIndex(world.posts["post_id"].to_numpy(), encoder.embed_posts(world.posts),
                      RetrievalConfig())
    return recall_at_k(index.search(members, encoder.embed_members(prompts), 100), held, (100,))[100]


def _split(world):
    imps = world.impressions
    split = imps["timestamp"].quantile(0.7, "nearest")
    train_imps = imps.filter(pl.col("timestamp") < split)
    held = imps.filter((pl.col("timestamp") >= split) & pl.col("click")).select("member_id", "post_id")
    return train_imps, held, held["member_id"].unique().sort().to_numpy(), \
        (split - WORLD_START).total_seconds() / 3600


@pytest.fixture(scope="module")
def tiny_causal_lm(tmp_path_factory):
    """A randomly initialised 2-layer GPT-2 with the MiniLM word-piece tokenizer."""
    from transformers import AutoTokenizer, GPT2Config, GPT2Model

    from embeddings.encoder import default_model_dir

    import torch

    path = tmp_path_factory.mktemp("tiny_gpt2")
    torch.manual_seed(0)  # the random weights must not depend on what ran before
    GPT2Model(GPT2Config(n_layer=2, n_head=2, n_embd=64, vocab_size=30522, n_positions=128)
              ).save_pretrained(path)
    AutoTokenizer.from_pretrained(default_model_dir()).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def tiny_world(small_corpus):
    """600 posts, 200 members: small enough to embed every post twice in a default test."""
    from recsim.world.world import WorldConfig, build_world

    corpus = small_corpus.group_by("source", maintain_order=True).head(100)
    return build_world(WorldConfig(seed=3, n_members=200, n_authors=40, n_impressions=10_000,
                                   slate_size=5, n_candidates=20), corpus=corpus)


def test_short_training_of_a_tiny_causal_lm_raises_recall(tiny_world, tiny_causal_lm):
    """Last-token pooling over a causal LM; training beats the untrained (random) encoder."""
    import torch

    small_world = tiny_world
    torch.manual_seed(0)
    cfg = DualEncoderConfig(model_dir=tiny_causal_lm, pooling="last", steps=60, batch_size=16,
                            learning_rate=3e-3, warmup_steps=5, freeze_embeddings=False,
                            prompt_max_length=64, post_max_length=32, precision="fp32",
                            prompt=PromptConfig(numbers="quantized", n_recent=2, recent_chars=60))
    train_imps, held, members, split_h = _split(small_world)
    encoder = DualEncoder(cfg)
    before = _recall(encoder, small_world, train_imps, held, members, split_h, cfg)
    examples = training_examples(train_imps, small_world.posts, small_world.members, cfg)
    assert len(examples.prompts) == train_imps["click"].sum()
    losses = train_dual_encoder(encoder, examples, small_world.posts, cfg)
    after = _recall(encoder, small_world, train_imps, held, members, split_h, cfg)
    assert np.mean(losses[-10:]) < np.mean(losses[:10])
    print(f"recall@100 untrained {before:.3f}, trained {after:.3f}")
    chance = 100 / small_world.posts.height  # recall@100 of a random ranking
    assert after > before + 0.04 and after > 1.2 * chance, (before, after, chance)


@pytest.mark.slow
def test_short_training_of_minilm_raises_recall(small_world):
    """The real backbone (two MiniLM layers): recall@100 rises over the untrained encoder."""
    cfg = DualEncoderConfig(num_layers=2, steps=30, batch_size=16, learning_rate=1e-4,
                            warmup_steps=3, prompt_max_length=96, post_max_length=48,
                            precision="fp32")
    train_imps, held, members, split_h = _split(small_world)
    encoder = DualEncoder(cfg)
    before = _recall(encoder, small_world, train_imps, held, members, split_h, cfg)
    train_dual_encoder(encoder, training_examples(train_imps, small_world.posts,
                                                  small_world.members, cfg), small_world.posts, cfg)
    after = _recall(encoder, small_world, train_imps, held, members, split_h, cfg)
    assert after > before + 0.02, (before, after)


def test_bad_dual_encoder_input_names_the_field(small_world, tmp_path):
    with pytest.raises(ValueError, match="dual_encoder.pooling: must be one of"):
        DualEncoder(DualEncoderConfig(pooling="max"))
    with pytest.raises(FileNotFoundError, match="dual_encoder.model_dir: /nonexistent"):
        DualEncoder(DualEncoderConfig(model_dir="/nonexistent"))
    with pytest.raises(KeyError, match=r"member_id: \[999999\] not in the members table"):
        member_prompts_at(small_world.impressions, small_world.posts, small_world.members,
                          np.array([999999]), 10.0, DualEncoderConfig())
