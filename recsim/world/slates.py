"""Plackett-Luce slates with exploration: the one home of the sampler and of its conditional and
marginal probabilities, for the world's logging policy and for the evaluation policies alike.

A slate policy fills S slots one at a time, without replacement. It is bound to the scores of
R requests, `policy(scores)`, and then gives, slot after slot, probabilities over the
candidates still available: `policy(scores)(available) -> probs`. Plackett-Luce with
exploration (`plackett_luce`) at one slot is

    (1 - epsilon) * softmax(scores / temperature) + epsilon * uniform,   both over `available`

(temperature 0: the sorted ranking, ties to the lower column). The probability of the chosen
candidate at its slot, given the slots above, is its conditional (the world logs it as the
`propensity`); per request and slot the probabilities sum to 1.

    1. plackett_luce          the policy                              [R, C] per slot
    2. sample_slot            one draw per request from a slot        [R]
    3. sample_slates          a whole slate per request, and the
                              conditional of each pick                [R, S], [R, S]
    4. logged_conditionals    the conditional of given slates         [R, S]
    5. slot_marginals         each candidate at each slot, any prefix [R, S, C]
    6. logged_marginals       the post of given slates at its slot    [R, S]

Shape legend: R requests, S slots, C candidates per request. `scores` is [R, C] floats,
`available` [R, C] bools, `shown` [R, S] candidate columns (ints in [0, C)).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

SlotProbabilities = Callable[[np.ndarray], np.ndarray]  # available [R, C] -> probs [R, C]
SlatePolicy = Callable[[np.ndarray], SlotProbabilities]  # scores [R, C] -> SlotProbabilities


# --- 1. the policy ----------------------------------------------------------------------------


def plackett_luce(temperature: float, epsilon: float = 0.0) -> SlatePolicy:
    """Plackett-Luce over softmax(scores / temperature), mixed with epsilon-uniform exploration.

    Returns a policy: scores [R, C] -> (available [R, C] -> probs [R, C]), where probs is 0 on
    unavailable candidates and each row sums to 1. temperature 0: all (1 - epsilon) mass on the
    best available score (ties to the lower column).
    """
    if temperature < 0:
        raise ValueError(f"plackett_luce: temperature must be >= 0, got {temperature}")

    def bind(scores: np.ndarray) -> SlotProbabilities:
        rows = np.arange(len(scores))
        z = scores / temperature if temperature > 0 else None

        def slot(available: np.ndarray) -> np.ndarray:
            # In place on one fresh array; the shift is the max over the *available* scores, so
            # the numbers do not depend on the candidates already taken.
            if z is not None:
                soft = np.where(available, z, -np.inf)
                soft -= soft.max(axis=1, keepdims=True)
                np.exp(soft, out=soft)
                soft /= soft.sum(axis=1, keepdims=True)
            else:
                soft = np.zeros(scores.shape)
                soft[rows, np.argmax(np.where(available, scores, -np.inf), axis=1)] = 1.0
            if epsilon == 0:
                return soft
            soft *= 1.0 - epsilon
            soft += available * (epsilon * (1.0 / available.sum(axis=1, keepdims=True)))
            return soft
        return slot
    return bind


def slot_probabilities(scores: np.ndarray, available: np.ndarray, temperature: float,
                       epsilon: float = 0.0) -> np.ndarray:
    """`plackett_luce` at one slot: [R, C] probabilities over the `available` candidates."""
    return plackett_luce(temperature, epsilon)(scores)(available)


# --- 2-3. sampling ----------------------------------------------------------------------------


def sample_slot(probs: np.ndarray, available: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """[R] one column per row drawn from `probs` [R, C] (rows need not sum to 1), never an
    unavailable one. Consumes exactly one `rng.random(R)`: inverse CDF on the cumulative sums;
    a draw that lands on an unavailable column (only by rounding) falls back to the most
    probable available one."""
    cum = np.cumsum(probs, axis=1)
    u = rng.random(len(probs)) * cum[:, -1]
    pick = np.minimum((cum <= u[:, None]).sum(axis=1), probs.shape[1] - 1)
    rows = np.arange(len(probs))
    return np.where(available[rows, pick], pick, np.argmax(available * probs, axis=1))


def sample_slates(policy: SlatePolicy, scores: np.ndarray, n_slots: int,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Fill `n_slots` slots per request without replacement.

    Returns chosen [R, S] candidate columns and their conditionals [R, S] (the probability of
    each pick at its slot given the picks above). One `rng.random(R)` per slot.
    """
    n_req = len(scores)
    slot_probs = policy(scores)
    available = np.ones(scores.shape, dtype=bool)
    chosen = np.empty((n_req, n_slots), dtype=np.int64)
    conditional = np.empty((n_req, n_slots))
    rows = np.arange(n_req)
    for slot in range(n_slots):
        probs = slot_probs(available)
        pick = sample_slot(probs, available, rng)
        chosen[:, slot] = pick
        conditional[:, slot] = probs[rows, pick]
        available[rows, pick] = False
    return chosen, conditional


# --- 4-6. probabilities of given slates -------------------------------------------------------


def logged_conditionals(policy: SlatePolicy, scores: np.ndarray, shown: np.ndarray) -> np.ndarray:
    """[R, S] probability of each shown candidate at its slot given the shown slots above it."""
    slot_probs = policy(scores)
    available = np.ones(scores.shape, dtype=bool)
    rows = np.arange(len(scores))
    out = np.empty(shown.shape)
    for slot in range(shown.shape[1]):
        out[:, slot] = slot_probs(available)[rows, shown[:, slot]]
        available[rows, shown[:, slot]] = False
    return out


def slot_marginals(policy: SlatePolicy, scores: np.ndarray, n_slots: int, n_samples: int,
                   rng: np.random.Generator) -> np.ndarray:
    """[R, S, C] probability of each candidate at each slot, marginal over the slots above.

    Slot 1 is exact. Deeper slots average, over `n_samples` sampled prefixes, the policy's
    probability of each candidate given the prefix (Rao-Blackwellised Monte Carlo: unbiased,
    and far less noisy than counting placements).
    """
    n_req, n_cand = scores.shape
    slot_probs = policy(np.repeat(scores, n_samples, axis=0))  # rows: (request, sample)
    available = np.ones((n_req * n_samples, n_cand), dtype=bool)
    rows = np.arange(len(available))
    out = np.empty((n_req, n_slots, n_cand))
    for slot in range(n_slots):
        probs = slot_probs(available)
        out[:, slot] = probs.reshape(n_req, n_samples, n_cand).mean(axis=1)
        available[rows, sample_slot(probs, available, rng)] = False
    return out


def logged_marginals(policy: SlatePolicy, scores: np.ndarray, shown: np.ndarray, n_samples: int,
                     rng: np.random.Generator, chunk: int = 1024, from_slot: int = 0) -> np.ndarray:
    """[R, S] probability that the policy puts the shown post of slot k at slot k (any prefix).

    Importance sampling that is unbiased and never 0 where the policy can reach the post: for
    the post a of slot k, prefixes are sampled from the policy with a removed, and each counts
    prod_{j<k} (1 - p_j(a | prefix)) * p_k(a | prefix). (Plain Monte Carlo can miss a post that
    the policy nearly always places higher, and 1 / 0 weights would follow.) Slot k needs k + 1
    steps, so each slot is simulated on its own (sum_k (k + 1) steps, not S * S); slots before
    `from_slot` (known exactly by the caller) are not simulated and are NaN. Requests are
    processed `chunk` at a time; rows inside a slot are (request, sample).
    """
    n_req, n_slots = shown.shape
    out = np.full((n_req, n_slots), np.nan)
    for start in range(0, n_req, chunk):
        sc, sh = scores[start:start + chunk], shown[start:start + chunk]
        for k in range(from_slot, n_slots):
            out[start:start + len(sh), k] = _logged_marginal_at(policy, sc, sh[:, k], k, n_samples, rng)
    return out


def _logged_marginal_at(policy: SlatePolicy, scores: np.ndarray, post_of_req: np.ndarray, k: int,
                        n_samples: int, rng: np.random.Generator) -> np.ndarray:
    """[R] logged_marginals at slot k (0-based): n_samples prefixes per request."""
    slot_probs = policy(np.repeat(scores, n_samples, axis=0))  # rows: (request, sample)
    post = np.repeat(post_of_req, n_samples)
    rows = np.arange(len(post))
    available = np.ones((len(post), scores.shape[1]), dtype=bool)
    weight = np.ones(len(post))
    for _ in range(k):
        probs = slot_probs(available)
        p_post = probs[rows, post]
        weight *= 1.0 - p_post
        probs[rows, post] = 0.0  # the next prefix slot: the policy without `post`
        available[rows, sample_slot(probs, available & (probs > 0), rng)] = False
    result = weight * slot_probs(available)[rows, post]
    return result.reshape(len(post_of_req), n_samples).mean(axis=1)
