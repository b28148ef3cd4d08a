"""Gradient caching for contrastive losses: large batches at the memory cost of small ones.

An in-batch-negatives loss couples every text of a batch to every other, so the batch cannot
simply be split into accumulated mini-batches: that would shrink the set of negatives each
anchor sees. GradCache (Gao et al., 2021, "Scaling Deep Contrastive Learning Batch Size under
Memory Limited Setup"; sentence-transformers' CachedMultipleNegativesRankingLoss) computes the
exact gradient of the whole-batch loss in three passes:

1. embed every text without a graph, mini-batch by mini-batch, keeping the RNG state before
   each mini-batch (so dropout can be replayed);
2. compute the loss on those embeddings as leaf tensors and backpropagate it to them only:
   d loss / d embedding, [B, D] per group, is the "cache";
3. embed each mini-batch again, with a graph, from its saved RNG state (the same dropout masks),
   and backpropagate its slice of the cache: `(embedding * cached_grad).sum().backward()`. By
   the chain rule the parameters' gradients accumulate to those of the whole-batch loss.

The price is one extra forward pass per text (about a third more compute on a CPU); the memory
held at once is one mini-batch's activations. Shape legend: B texts of a group, D dimension.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


def cached_backward(encode: Callable[[list[str]], torch.Tensor], groups: Sequence[list[str]],
                    loss_fn: Callable[..., torch.Tensor], mini_batch: int) -> torch.Tensor:
    """Backpropagate `loss_fn(*[encode(g) for g in groups])` into `encode`'s parameters through
    mini-batches of at most `mini_batch` texts; return the loss, detached.

    encode: [n] texts -> [n, D] embeddings with a graph (e.g. `TextTower.encode`).
    groups: the loss's text arguments in order (anchors, positives, hard negatives ...).
    The parameters' `.grad` accumulate as `loss.backward()` of the plain loss would; the global
    torch RNG ends where pass 1 left it, so later draws do not depend on the replay.
    """
    if mini_batch < 1:
        raise ValueError(f"training.mini_batch_size: must be >= 1, got {mini_batch}")
    chunks = [[list(g[i: i + mini_batch]) for i in range(0, len(g), mini_batch)] for g in groups]
    # 1. Embeddings without a graph; the RNG state before each mini-batch.
    states, reps = [], []
    with torch.no_grad():
        for group in chunks:
            states.append([])
            parts = []
            for texts in group:
                states[-1].append(torch.get_rng_state())
                parts.append(encode(texts))
            reps.append(torch.cat(parts).detach().requires_grad_(True))
    after = torch.get_rng_state()
    # 2. The loss on the cached embeddings, and its gradient with respect to them.
    loss = loss_fn(*reps)
    loss.backward()
    # 3. Replay each mini-batch with a graph, backpropagating its slice of the cache.
    for group, group_states, rep in zip(chunks, states, reps):
        start = 0
        for texts, state in zip(group, group_states):
            torch.set_rng_state(state)
            out = encode(texts)
            out.backward(rep.grad[start: start + len(texts)])
            start += len(texts)
    torch.set_rng_state(after)
    return loss.detach()
