"""The funnel policy: candidate sources, scoring every candidate, slates; against references."""

from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest

from ranker.retrieval.candidates import member_queries, retrieve_candidates
from ranker.retrieval.history import MemberHistory
from ranker.retrieval.index import PostIndex, RetrievalConfig
from recsim.ope import funnel, policies
from recsim.world.timeline import hours_since_start


def _requests(world, n=300, seed=0):
    first = world.impressions.filter(pl.col("position") == 1)
    return (first.sample(n, seed=seed).sort("request_id")
            .select("request_id", "member_id", "timestamp"))


def _oracle(world, noise=0.0, seed=0):
    """A scorer from the user model's own relevance (plus optional noise): a reference ranker."""
    truth, rng = world.truth, np.random.default_rng(seed)

    def score(rows: pl.DataFrame):
        m = truth.member_index(rows["member_id"].to_numpy())
        p = truth.post_index(rows["post_id"].to_numpy())
        t = rows.select(hours_since_start(pl.col("timestamp"))).to_series().to_numpy()
        logit = truth.relevance_logit(m, p, t) + noise * rng.standard_normal(rows.height)
        return SimpleNamespace(score=logit, click_prob=1 / (1 + np.exp(-logit)))
    return score


def _random(seed=0):
    rng = np.random.default_rng(seed)
    return lambda rows: SimpleNamespace(score=rng.random(rows.height), click_prob=np.full(rows.height, 0.1))


def test_logged_top_slot_reproduces_the_top_slot_policy(small_world):
    requests = _requests(small_world)
    cands = funnel.logged_candidates(small_world.candidates, requests)
    out = funnel.serve(cands, requests, _oracle(small_world, noise=1.0), slate_size=5,
                       temperature=0.0, seed=0)
    top = out.slates.filter(pl.col("position") == 1).select("request_id", "post_id", "prob")
    reference = policies.top_slot_probabilities(out.candidates, 0.0)
    assert top.sort("request_id").equals(reference.sort("request_id"))
    assert out.slates.group_by("request_id").len()["len"].to_list() == [5] * requests.height
    assert out.candidates["logged"].all()


def test_oracle_beats_a_noisy_ranker_and_random_matches_the_candidates_mean(small_world):
    from recsim.ope.online import expected_engagement

    requests = _requests(small_world)
    cands = funnel.logged_candidates(small_world.candidates, requests)
    value = {}
    for name, scorer in {"oracle": _oracle(small_world), "noisy": _oracle(small_world, 2.0),
                         "random": _random()}.items():
        out = funnel.serve(cands, requests, scorer, 5, 0.0, seed=0)
        value[name] = expected_engagement(small_world.truth, out.slates, requests)["click"]
    assert value["oracle"] > value["noisy"] > value["random"]
    # A uniform policy (huge temperature) puts each candidate at each slot with prob 1 / C
    # (exactly at slot 1; deeper slots are Monte Carlo averages over sampled prefixes):
    uniform = funnel.serve(cands, requests, _random(), 5, temperature=1e9, seed=0, n_samples=64)
    n_cand = cands.group_by("request_id").len()
    probs = uniform.slates.filter(pl.col("position") == 1).join(n_cand, on="request_id")
    assert probs["prob"].to_numpy() == pytest.approx(1 / probs["len"].to_numpy(), rel=1e-6)
    per_slot = (cands.join(requests, on="request_id")
                .join(pl.DataFrame({"position": np.arange(1, 6, dtype=np.int32)}), how="cross"))
    mean_of_candidates = (small_world.truth.expected_outcomes(per_slot)
                          .group_by("request_id", "position").agg(pl.col("p_click").mean())
                          ["p_click"].sum())
    got = expected_engagement(small_world.truth, uniform.slates, requests)["click"]
    assert got * requests.height == pytest.approx(mean_of_candidates, rel=0.01)


def test_plackett_luce_marginals_sum_to_one_per_slot_and_served_is_a_slate(small_world):
    requests = _requests(small_world, n=50)
    cands = funnel.logged_candidates(small_world.candidates, requests)
    out = funnel.serve(cands, requests, _oracle(small_world), 5, temperature=0.5, seed=1)
    per_slot = out.slates.group_by("request_id", "position").agg(pl.col("prob").sum())
    assert per_slot["prob"].to_numpy() == pytest.approx(1.0)
    assert out.served.group_by("request_id").agg(pl.col("post_id").n_unique())["post_id"].to_list() == [5] * 50
    assert out.served.join(cands, on=["request_id", "post_id"], how="anti").height == 0


@pytest.fixture(scope="module")
def retrieval_setup(small_world):
    posts = small_world.posts
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((posts.height, 16)).astype(np.float32)
    created = posts.select(hours_since_start(pl.col("created_at"))).to_series().to_numpy()
    index = PostIndex(posts["post_id"].to_numpy(), vectors, RetrievalConfig(), created=created)
    history = MemberHistory(small_world.impressions, posts["post_id"].to_numpy(), vectors, 7.0)
    requests = _requests(small_world, n=200).with_columns(
        t_hours=hours_since_start(pl.col("timestamp")))
    return posts.with_columns(created_h=created), index, history, requests


def test_retrieval_never_returns_a_post_from_the_future_or_outside_the_window(small_world,
                                                                               retrieval_setup):
    posts, index, history, requests = retrieval_setup
    queries, _ = member_queries(history, requests["member_id"].to_numpy(), requests["t_hours"].to_numpy())
    window = small_world.config.post_window_days
    found = retrieve_candidates(index, queries, requests, k=50, window_days=window)
    joined = found.join(requests, on="request_id").join(posts.select("post_id", "created_h"), on="post_id")
    assert joined.height > 0.9 * 50 * requests.height  # the window holds enough posts
    assert (joined["created_h"] <= joined["t_hours"]).all()
    assert (joined["created_h"] >= joined["t_hours"] - window * 24).all()
    ranks = found.group_by("request_id").agg(pl.col("retrieval_rank").max())["retrieval_rank"]
    assert ranks.max() <= 50


def test_retrieval_excludes_posts_seen_before_the_request(small_world, retrieval_setup):
    posts, index, history, requests = retrieval_setup
    queries, _ = member_queries(history, requests["member_id"].to_numpy(), requests["t_hours"].to_numpy())
    seen = small_world.impressions.select("member_id", "post_id",
                                          t_hours=hours_since_start(pl.col("timestamp")))
    found = retrieve_candidates(index, queries, requests, k=30,
                                window_days=small_world.config.post_window_days, seen=seen)
    clash = (found.join(requests, on="request_id")
             .join(seen.rename({"t_hours": "seen_t"}), on=["member_id", "post_id"])
             .filter(pl.col("seen_t") < pl.col("t_hours")))
    assert clash.height == 0
    assert found.group_by("request_id").len()["len"].min() == 30


def test_retrieved_candidates_are_marked_logged_only_when_in_the_log(small_world, retrieval_setup):
    posts, index, history, requests = retrieval_setup
    queries, _ = member_queries(history, requests["member_id"].to_numpy(), requests["t_hours"].to_numpy())
    found = retrieve_candidates(index, queries, requests, k=50, window_days=7.0)
    marked = funnel.mark_logged(found, small_world.candidates)
    inside = marked.filter("logged").join(small_world.candidates, on=["request_id", "post_id"], how="anti")
    assert inside.height == 0 and 0 < marked["logged"].mean() < 1


def test_dual_encoder_member_vectors_feed_the_retrieval_source(small_world):
    """member_vectors=dual_encoder: member prompts at each request's time through the (here
    untrained, one-layer) dual encoder, searching its own post vectors; live posts only."""
    from ranker.retrieval.candidates import DualEncoderQueries, RetrievalSource
    from ranker.retrieval.config import DualEncoderConfig, RetrievalConfig
    from ranker.retrieval.dual_encoder import DualEncoder

    cfg = DualEncoderConfig(num_layers=1, precision="fp32", prompt_max_length=48, post_max_length=24)
    encoder = DualEncoder(cfg)
    posts = small_world.posts.head(600)
    source = RetrievalSource.build(
        posts, encoder.embed_posts(posts),
        DualEncoderQueries(encoder, small_world.impressions, posts, small_world.members),
        RetrievalConfig(), small_world.impressions, small_world.config.post_window_days)
    requests = _requests(small_world, n=40)
    found, seconds = source.candidates(requests, k=10)
    t = requests.select("request_id", t_hours=hours_since_start(pl.col("timestamp")))
    created = posts.select("post_id", c=hours_since_start(pl.col("created_at")))
    joined = found.join(t, on="request_id").join(created, on="post_id")
    assert joined.height > 0 and (joined["c"] <= joined["t_hours"]).all() and seconds > 0
    # the member tower's query is the prompt's embedding: same member and time, same vector
    q = source.queries(np.array([requests["member_id"][0]] * 2), np.array([t["t_hours"][0]] * 2))
    assert np.allclose(q[0], q[1]) and np.linalg.norm(q[0]) == pytest.approx(1.0, abs=1e-5)
