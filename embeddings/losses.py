"""InfoNCE with in-batch and hard negatives, false negatives masked, and its Matryoshka mean.

Every anchor a_i [B, D] is scored against all candidates c = [positives ; negatives]
[B + N, D]: logits[i, j] = s * cos(a_i, c_j), and row i's target is column i, its own positive.
The other rows' positives are in-batch negatives; the N hard negatives are extra columns that
every row scores (N = B * H for H per row, in any order), as in sentence-transformers'
MultipleNegativesRankingLoss.

A candidate that is not really a negative for row i (another text of the same label, the same
post clicked by another row, ...) is masked out of row i's softmax: `labels` masks the
in-batch columns that share the anchor's label, `exclude` any cell. Row i's own positive (the
diagonal) is never masked.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def same_key(rows: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """Keys [R] and [C] -> [R, C] bool, True where row and column keys are equal."""
    return rows[:, None] == columns[None, :]


def info_nce(anchors: torch.Tensor, positives: torch.Tensor, labels: torch.Tensor | None = None,
             scale: float = 20.0, *, negatives: torch.Tensor | None = None,
             exclude: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cross-entropy of matching each anchor [B, D] to its positive [B, D].

    negatives [N, D]: hard negatives, extra candidate columns B..B+N-1 of every row.
    labels [B]: in-batch columns j != i with labels[j] == labels[i] are masked.
    exclude [B, B + N] bool: further cells masked (the diagonal is kept whatever it says).
    Returns a scalar; gradients flow to anchors, positives and negatives.
    """
    b = len(anchors)
    candidates = positives if negatives is None else torch.cat([positives, negatives])
    a = F.normalize(anchors.float(), dim=-1)
    c = F.normalize(candidates.float(), dim=-1)
    logits = scale * a @ c.T  # [B, B + N]
    masked = _not_negatives(labels, exclude, b, len(c), logits.device)
    if masked is not None:
        logits = logits.masked_fill(masked, float("-inf"))
    return F.cross_entropy(logits, torch.arange(b, device=logits.device))


def _not_negatives(labels: torch.Tensor | None, exclude: torch.Tensor | None, b: int,
                   n_candidates: int, device: torch.device) -> torch.Tensor | None:
    """[B, B + N] bool of the cells to mask, or None when nothing is."""
    if labels is None and exclude is None:
        return None
    masked = torch.zeros(b, n_candidates, dtype=torch.bool, device=device)
    if labels is not None:
        labels = labels.to(device)
        masked[:, :b] = same_key(labels, labels)
    if exclude is not None:
        if tuple(exclude.shape) != (b, n_candidates):
            raise ValueError(f"info_nce: exclude must be [B, B + N] = [{b}, {n_candidates}], "
                             f"got {list(exclude.shape)}")
        masked |= exclude.to(device)
    diagonal = torch.arange(b, device=device)
    masked[diagonal, diagonal] = False
    return masked


def matryoshka_info_nce(anchors: torch.Tensor, positives: torch.Tensor,
                        labels: torch.Tensor | None, dims: list[int], scale: float = 20.0, *,
                        negatives: torch.Tensor | None = None,
                        exclude: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of `info_nce` over the leading `dims` coordinates of every vector (anchors,
    positives and negatives truncated alike; each truncation renormalised)."""
    losses = [info_nce(anchors[:, :d], positives[:, :d], labels, scale,
                       negatives=None if negatives is None else negatives[:, :d], exclude=exclude)
              for d in dims]
    return torch.stack(losses).mean()
