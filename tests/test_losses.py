"""The one InfoNCE (embeddings/losses.py) against answers computed by hand, not by other code."""

import math

import pytest
import torch

from embeddings.losses import info_nce, matryoshka_info_nce


def test_two_by_two_with_a_hard_negative_solved_by_hand():
    """Orthogonal anchors = positives; one hard negative equal to anchor 0, at scale s.

    Row 0 scores [p0, p1, n] = [s, 0, s]: loss log(2 + e^-s); row 1 scores [0, s, 0]:
    loss log(1 + 2 e^-s). Masking row 0's negative brings row 0 back to log(1 + e^-s).
    """
    s = 2.0
    a = torch.eye(2)
    n = torch.tensor([[3.0, 0.0]])  # normalised to [1, 0]
    both = (math.log(2 + math.exp(-s)) + math.log(1 + 2 * math.exp(-s))) / 2
    assert float(info_nce(a, a, scale=s, negatives=n)) == pytest.approx(both, rel=1e-6)
    exclude = torch.tensor([[False, False, True], [False, False, False]])
    masked = (math.log(1 + math.exp(-s)) + math.log(1 + 2 * math.exp(-s))) / 2
    assert float(info_nce(a, a, scale=s, negatives=n, exclude=exclude)) == pytest.approx(masked, rel=1e-6)
    assert float(info_nce(a, a, scale=s)) == pytest.approx(math.log(1 + math.exp(-s)), rel=1e-6)


def _by_hand(a, p, n, labels, exclude, scale):
    """Row by row in float64: -logit of the own positive + log sum exp over kept columns."""
    a = [r / r.norm() for r in a.double()]
    c = [r / r.norm() for r in torch.cat([p, n]).double()]
    total = 0.0
    for i in range(len(a)):
        kept = [j for j in range(len(c)) if j == i or not (
            (labels is not None and j < len(a) and labels[j] == labels[i]) or bool(exclude[i, j]))]
        logits = {j: scale * float(a[i] @ c[j]) for j in kept}
        total += -logits[i] + math.log(sum(math.exp(v) for v in logits.values()))
    return total / len(a)


@pytest.mark.parametrize("b,d,n_neg,with_labels", [(3, 4, 0, False), (5, 8, 5, True),
                                                   (6, 16, 12, True), (4, 32, 3, False)])
def test_random_cases_match_a_row_by_row_computation(b, d, n_neg, with_labels):
    g = torch.Generator().manual_seed(b * 100 + d)
    a, p, n = torch.randn(b, d, generator=g), torch.randn(b, d, generator=g), torch.randn(n_neg, d, generator=g)
    labels = torch.randint(0, 2, (b,), generator=g) if with_labels else None
    exclude = torch.rand(b, b + n_neg, generator=g) < 0.3
    exclude[0, 0] = True  # the diagonal is never masked, whatever `exclude` says
    for scale in (1.0, 20.0):
        got = info_nce(a, p, labels, scale, negatives=n, exclude=exclude)
        assert float(got) == pytest.approx(_by_hand(a, p, n, labels, exclude, scale), rel=1e-5)
        dims = [d, d // 2, 2]
        mat = matryoshka_info_nce(a, p, labels, dims, scale, negatives=n, exclude=exclude)
        expected = sum(_by_hand(a[:, :k], p[:, :k], n[:, :k], labels, exclude, scale) for k in dims) / 3
        assert float(mat) == pytest.approx(expected, rel=1e-5)


def test_masking_removes_same_label_negatives():
    a = torch.eye(4)
    p = torch.eye(4)
    p[1] = a[0]  # positive 1 looks exactly like anchor 0: a "false negative" for row 0
    labels = torch.tensor([0, 0, 1, 2])
    logits = 20.0 * a @ torch.nn.functional.normalize(p, dim=-1).T
    # Row 0 without column 1 (same label), rows 1..3 over all columns.
    keep = torch.ones(4, 4, dtype=torch.bool)
    keep[0, 1] = keep[1, 0] = False
    expected = torch.stack([
        -torch.log_softmax(logits[i][keep[i]], dim=0)[int(keep[i][:i].sum())] for i in range(4)
    ]).mean()
    assert float(info_nce(a, p, labels)) == pytest.approx(float(expected), rel=1e-5)
    assert float(info_nce(a, p, labels)) < float(info_nce(a, p, None))


def test_gradients_reach_hard_negatives_and_a_bad_mask_is_refused():
    g = torch.Generator().manual_seed(0)
    a, p, n = (torch.randn(3, 8, generator=g).requires_grad_() for _ in range(3))
    info_nce(a, p, negatives=n).backward()
    assert all(x.grad is not None and x.grad.abs().sum() > 0 for x in (a, p, n))
    with pytest.raises(ValueError, match=r"exclude must be \[B, B \+ N\] = \[3, 6\]"):
        info_nce(a, p, negatives=n, exclude=torch.zeros(3, 3, dtype=torch.bool))
