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


# --- against an independent reference: hand-computed numbers and plain-Python enumeration ------

import itertools  # noqa: E402
import math  # noqa: E402

import pytest  # noqa: E402

from recsim.world.slates import sample_slates, slot_probabilities  # noqa: E402


def _reference_slates(scores, temperature, epsilon, n_slots):
    """{slate (tuple of columns): probability}, enumerated with plain floats."""
    weights = [math.exp(s / temperature) for s in scores]
    out = {}
    for slate in itertools.permutations(range(len(scores)), n_slots):
        prob, left = 1.0, list(range(len(scores)))
        for c in slate:
            total = sum(weights[i] for i in left)
            prob *= (1 - epsilon) * weights[c] / total + epsilon / len(left)
            left.remove(c)
        out[slate] = prob
    return out


def _reference_marginals(slates, n_slots, n_cand):
    """[S, C] probability of each candidate at each slot, from enumerated slates."""
    marg = np.zeros((n_slots, n_cand))
    for slate, prob in slates.items():
        marg[np.arange(n_slots), list(slate)] += prob
    return marg


def _same(got, want):
    return np.allclose(got, np.array(want, dtype=float), rtol=1e-12, atol=1e-15)


def test_one_slot_by_hand():
    scores = np.log([[1.0, 2.0, 3.0]])  # softmax weights 1 : 2 : 3
    everything = np.ones((1, 3), bool)
    assert _same(slot_probabilities(scores, everything, 1.0), [[1 / 6, 2 / 6, 3 / 6]])
    # epsilon 0.3 mixes in 0.3 / 3 = 0.1 each
    assert _same(slot_probabilities(scores, everything, 1.0, 0.3),
                 [[0.7 / 6 + 0.1, 1.4 / 6 + 0.1, 2.1 / 6 + 0.1]])
    # column 2 taken: 1 : 2 over the two left, the uniform share 0.3 / 2
    first_two = np.array([[True, True, False]])
    assert _same(slot_probabilities(scores, first_two, 1.0, 0.3),
                 [[0.7 / 3 + 0.15, 1.4 / 3 + 0.15, 0.0]])
    # temperature 2 over log(1, 4, 9) gives the same 1 : 2 : 3
    assert _same(slot_probabilities(np.log([[1.0, 4.0, 9.0]]), everything, 2.0),
                 [[1 / 6, 2 / 6, 3 / 6]])
    # temperature 0: the best available score, ties to the lower column
    ties = np.array([[1.0, 3.0, 3.0]])
    assert _same(slot_probabilities(ties, everything, 0.0, 0.3), [[0.1, 0.8, 0.1]])
    assert _same(slot_probabilities(ties, np.array([[True, False, True]]), 0.0), [[0, 0, 1]])
    with pytest.raises(ValueError, match="temperature"):
        plackett_luce(-1.0)


def test_conditionals_of_a_slate_by_hand():
    scores = np.log([[1.0, 2.0, 3.0]])
    shown = np.array([[2, 1, 0]])  # the slate's probability: 3/6 * 2/3 * 1 = 1/3
    assert _same(logged_conditionals(plackett_luce(1.0), scores, shown), [[3 / 6, 2 / 3, 1.0]])
    assert _same(logged_conditionals(plackett_luce(1.0, 0.3), scores, shown),
                 [[0.7 * 3 / 6 + 0.1, 0.7 * 2 / 3 + 0.15, 1.0]])


@pytest.mark.parametrize("temperature, epsilon", [(1.0, 0.0), (0.5, 0.2), (0.0, 0.0), (0.0, 0.1)])
def test_each_slot_is_a_distribution_over_the_available_candidates(temperature, epsilon):
    rng = np.random.default_rng(2)
    scores = rng.normal(scale=3.0, size=(30, 9))
    chosen, conditional = sample_slates(plackett_luce(temperature, epsilon), scores, 6, rng)
    assert (np.sort(chosen, axis=1)[:, 1:] != np.sort(chosen, axis=1)[:, :-1]).all()  # distinct
    assert np.array_equal(conditional, logged_conditionals(
        plackett_luce(temperature, epsilon), scores, chosen))
    slot = plackett_luce(temperature, epsilon)(scores)
    available = np.ones(scores.shape, bool)
    rows = np.arange(len(scores))
    for k in range(chosen.shape[1]):  # along the sampled slates, per-slot probabilities
        probs = slot(available)
        assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-12)
        assert (probs[~available] == 0).all() and (probs >= 0).all()
        available[rows, chosen[:, k]] = False


def test_sampled_slates_follow_the_exact_probabilities():
    """Frequencies of a seeded sampler against plain-Python enumeration (4 candidates, 3 slots)."""
    scores, n_slots, n_rows = [0.5, -1.0, 2.0, 0.0], 3, 40_000
    reference = _reference_slates(scores, 1.0, 0.2, n_slots)
    exact = _reference_marginals(reference, n_slots, len(scores))
    assert np.allclose(exact.sum(axis=1), 1.0)
    chosen, conditional = sample_slates(plackett_luce(1.0, 0.2), np.tile(scores, (n_rows, 1)),
                                        n_slots, np.random.default_rng(3))
    freq = np.stack([np.bincount(chosen[:, k], minlength=len(scores)) for k in range(n_slots)])
    freq = freq / n_rows
    assert np.abs(freq - exact).max() < 5 * np.sqrt(exact * (1 - exact) / n_rows).max()
    # the product of the logged conditionals is each sampled slate's exact probability
    slate_prob = np.array([reference[tuple(row)] for row in chosen[:50]])
    assert np.allclose(conditional[:50].prod(axis=1), slate_prob, rtol=1e-12)


def test_marginals_match_the_enumeration():
    scores, n_slots = [0.5, -1.0, 2.0, 0.0, 1.0], 3
    exact = _reference_marginals(_reference_slates(scores, 0.7, 0.1, n_slots), n_slots, len(scores))
    policy = plackett_luce(0.7, 0.1)
    rng = np.random.default_rng(4)
    marg = slot_marginals(policy, np.array([scores]), n_slots, 20_000, rng)[0]
    assert marg[0] == pytest.approx(exact[0], rel=1e-12)  # slot 1 is exact
    assert np.allclose(marg, exact, atol=0.01)
    shown = np.array([[2, 4, 0], [1, 3, 2]])  # two logged slates of the same request
    logged = logged_marginals(policy, np.array([scores, scores]), shown, 20_000, rng)
    assert np.allclose(logged, exact[np.arange(n_slots), shown], rtol=0.03)


def test_one_uniform_draw_per_request_and_slot():
    """The world's random stream depends on it: a slot consumes exactly rng.random(R)."""
    scores = np.random.default_rng(5).normal(size=(7, 6))
    rng, twin = np.random.default_rng(6), np.random.default_rng(6)
    sample_slates(plackett_luce(1.0, 0.1), scores, 4, rng)
    for _ in range(4):
        twin.random(7)
    assert rng.random() == twin.random()
