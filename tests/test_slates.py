"""Plackett-Luce slates (recsim/world/slates.py): the world's logging policy and the evaluation
policies share this one sampler and its conditionals and marginals."""

import numpy as np

from recsim.world.slates import logged_conditionals, logged_marginals, plackett_luce, slot_marginals
from recsim.world.world import logging_policy


def test_logged_conditionals_reproduce_the_worlds_propensities(small_world):
    cands = small_world.candidates.sort("request_id", maintain_order=True)
    imps = small_world.impressions.sort("request_id", "position")
    n = imps["request_id"].n_unique()
    cand = cands["post_id"].to_numpy().reshape(n, -1)
    shown_post = imps["post_id"].to_numpy().reshape(n, -1)
    shown = np.argmax(shown_post[:, :, None] == cand[:, None, :], axis=2)
    scores = cands["logging_score"].to_numpy().reshape(n, -1)
    policy = logging_policy(small_world.config)
    assert np.allclose(logged_conditionals(policy, scores, shown).ravel(), imps["propensity"])


def test_marginals_are_distributions_and_agree_with_each_other():
    rng = np.random.default_rng(1)
    scores = rng.normal(scale=2.0, size=(40, 12))
    policy = plackett_luce(1.0, 0.1)
    marg = slot_marginals(policy, scores, 4, 4000, rng)
    assert np.allclose(marg.sum(axis=2), 1.0)  # each slot holds one post
    assert (marg.sum(axis=1) <= 1.02).all()  # a post holds at most one slot (up to MC noise)
    shown = np.argsort(-scores, axis=1)[:, [3, 0, 7, 1]]  # some logged slates
    picked = np.take_along_axis(marg, shown[:, :, None], axis=2)[:, :, 0]
    ours = logged_marginals(policy, scores, shown, 400, rng)
    assert np.allclose(ours[:, 0], picked[:, 0])  # slot 1 is exact in both
    assert (ours > 0).all()
    assert np.allclose(ours, picked, rtol=0.1, atol=1e-3)
