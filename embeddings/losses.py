"""InfoNCE with in-batch negatives, same-label masking, and its Matryoshka sum.

For anchors a_i and positives p_j (B each, unit vectors), the logits are s * a_i . p_j. Row i's
target is column i. Columns j != i whose label equals label_i are not negatives (they are other
texts or descriptions of the same label), so they are masked out of the softmax.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(anchors: torch.Tensor, positives: torch.Tensor, labels: torch.Tensor | None,
             scale: float = 20.0) -> torch.Tensor:
    """Mean cross-entropy of matching each anchor [B, D] to its positive [B, D].

    labels [B]: when given, in-batch "negatives" sharing the anchor's label are masked.
    """
    a = F.normalize(anchors.float(), dim=-1)
    p = F.normalize(positives.float(), dim=-1)
    logits = scale * a @ p.T
    if labels is not None:
        same = labels[:, None] == labels[None, :]
        same.fill_diagonal_(False)
        logits = logits.masked_fill(same, float("-inf"))
    return F.cross_entropy(logits, torch.arange(len(a), device=a.device))


def matryoshka_info_nce(anchors: torch.Tensor, positives: torch.Tensor,
                        labels: torch.Tensor | None, dims: list[int], scale: float = 20.0) -> torch.Tensor:
    """Mean InfoNCE over the leading `dims` coordinates (each truncation renormalised)."""
    losses = [info_nce(anchors[:, :d], positives[:, :d], labels, scale) for d in dims]
    return torch.stack(losses).mean()
