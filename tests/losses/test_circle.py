"""Circle loss against an explicit per-anchor loop (Sun et al., CVPR 2020), gradcheck and PML."""

from __future__ import annotations

import math

import pytest
import torch

from deepmetric.errors import ConfigError
from deepmetric.functional.circle import circle_loss, circle_weights
from deepmetric.functional.distances import cosine_similarity_matrix
from deepmetric.functional.masks import label_masks
from deepmetric.losses import build_loss
from deepmetric.losses.base import PairLoss
from deepmetric.losses.circle import CircleLoss


def cos(u, v):
    return (u * v).sum() / torch.sqrt((u * u).sum() * (v * v).sum())


def loop_loss(x, labels, m=0.25, gamma=256.0):
    """Slow reference: per anchor, sums over its positives and negatives written out; the
    weights alpha are constants (floats), anchors without a positive or a negative skipped."""
    n = x.shape[0]
    terms = []
    for i in range(n):
        pos = [j for j in range(n) if j != i and labels[j] == labels[i]]
        neg = [j for j in range(n) if labels[j] != labels[i]]
        if not pos or not neg:
            continue
        sum_p = x.new_zeros(())
        for j in pos:
            s = cos(x[i], x[j])
            alpha = max(1 + m - s.item(), 0.0)
            sum_p = sum_p + torch.exp(-gamma * alpha * (s - (1 - m)))
        sum_n = x.new_zeros(())
        for j in neg:
            s = cos(x[i], x[j])
            alpha = max(s.item() + m, 0.0)
            sum_n = sum_n + torch.exp(gamma * alpha * (s - m))
        terms.append(torch.log(1 + sum_n * sum_p))  # softplus(log a + log b) = log(1 + a b)
    if not terms:
        return x.sum() * 0.0
    return sum(terms) / len(terms)


def data(seed=0, n=10, dim=5):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 3, 4][:n])  # 3 and 4: anchors without positives
    return x, labels


@pytest.mark.parametrize("m,gamma", [(0.25, 4.0), (0.4, 16.0), (0.25, 64.0)])
def test_value_and_gradient_match_loop(m: float, gamma: float) -> None:
    x, labels = data()
    a = x.clone().requires_grad_(True)
    out = CircleLoss(m=m, gamma=gamma)(a, labels)
    out.backward()
    b = x.clone().requires_grad_(True)
    ref = loop_loss(b, labels, m, gamma)
    ref.backward()
    assert out.item() == pytest.approx(ref.item(), rel=1e-10)
    assert torch.allclose(a.grad, b.grad, rtol=1e-7, atol=1e-11)


def test_paper_gamma_is_stable_and_matches_a_stable_loop() -> None:
    """gamma = 256 overflows the naive loop's exp; compare with a logsumexp loop instead."""
    x, labels = data(1)
    out = CircleLoss()(x, labels)
    sim = cosine_similarity_matrix(x)
    terms = []
    for i in range(x.shape[0]):
        pos = [j for j in range(x.shape[0]) if j != i and labels[j] == labels[i]]
        neg = [j for j in range(x.shape[0]) if labels[j] != labels[i]]
        if pos and neg:
            lp = torch.stack([-256 * max(1.25 - sim[i, j].item(), 0) * (sim[i, j] - 0.75) for j in pos])
            ln = torch.stack([256 * max(sim[i, j].item() + 0.25, 0) * (sim[i, j] - 0.25) for j in neg])
            terms.append(torch.nn.functional.softplus(torch.logsumexp(lp, 0) + torch.logsumexp(ln, 0)))
    assert torch.isfinite(out)
    assert out.item() == pytest.approx((sum(terms) / len(terms)).item(), rel=1e-10)


def test_gradcheck_float64() -> None:
    """The weights alpha are constants of the gradient (detached), so the numerical check holds
    them fixed at the point's values; the default path gives the same value and gradient."""
    x, labels = data(2)
    pos, neg = label_masks(labels)
    x.requires_grad_(True)
    fixed = circle_weights(cosine_similarity_matrix(x), m=0.25)
    assert torch.autograd.gradcheck(
        lambda e: circle_loss(cosine_similarity_matrix(e), pos, neg, m=0.25, gamma=8.0, weights=fixed), (x,)
    )
    default = circle_loss(cosine_similarity_matrix(x), pos, neg, m=0.25, gamma=8.0)
    held = circle_loss(cosine_similarity_matrix(x), pos, neg, m=0.25, gamma=8.0, weights=fixed)
    g1, = torch.autograd.grad(default, x)
    g2, = torch.autograd.grad(held, x)
    assert default.item() == held.item() and torch.equal(g1, g2)


def test_degenerate_batches() -> None:
    loss = CircleLoss(gamma=64.0)
    cases = {
        "one class (no negatives)": (torch.randn(4, 3), torch.zeros(4, dtype=torch.long), 0.0),
        "no positives": (torch.randn(4, 3), torch.arange(4), 0.0),
        "single sample": (torch.randn(1, 3), torch.tensor([1]), 0.0),
        "duplicates": (torch.ones(4, 3), torch.tensor([0, 0, 1, 1]), None),
        "zero vector": (torch.cat([torch.zeros(1, 3), torch.randn(3, 3)]), torch.tensor([0, 0, 1, 1]), None),
    }
    for what, (x, labels, expected) in cases.items():
        x = x.clone().requires_grad_(True)
        out = loss(x, labels)
        out.backward()
        assert torch.isfinite(out) and torch.isfinite(x.grad).all(), what
        if expected is not None:
            assert out.item() == expected and torch.equal(x.grad, torch.zeros_like(x)), what
    # duplicates: s = 1 for every pair, alpha_p = m, alpha_n = 1 + m
    x = torch.ones(4, 3, dtype=torch.float64)
    m, gamma = 0.25, 64.0
    lp = -gamma * m * (1 - (1 - m))
    ln = gamma * (1 + m) * (1 - m)
    expected = math.log1p(math.exp(lp) * 2 * math.exp(ln))  # one positive, two negatives each
    assert loss(x, torch.tensor([0, 0, 1, 1])).item() == pytest.approx(expected, rel=1e-12)


def test_pair_loss_path_and_build() -> None:
    loss = build_loss("circle")
    assert isinstance(loss, CircleLoss) and isinstance(loss, PairLoss)
    assert loss.metric == "cosine" and loss.higher_is_closer
    assert (loss.m, loss.gamma) == (0.25, 256.0)
    x, labels = data(3)
    pos, neg = label_masks(labels)
    assert loss(x, labels).item() == loss.matrix_loss(loss.pair_matrix(x), pos, neg).item()
    with pytest.raises(ConfigError, match="gamma"):
        CircleLoss(gamma=0.0)
    with pytest.raises(ConfigError, match="m must"):
        CircleLoss(m=1.5)


@pytest.mark.parametrize("m,gamma", [(0.25, 256.0), (0.4, 80.0)])
def test_agrees_with_pml(m: float, gamma: float) -> None:
    """Same formula; PML averages over non-zero anchor losses, ours over anchors with a positive
    and a negative: the same here (no valid anchor's loss underflows to 0)."""
    pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
    torch.manual_seed(4)
    x = torch.randn(32, 8, dtype=torch.float64)
    labels = torch.cat([torch.arange(7).repeat_interleave(4), torch.tensor([7, 8, 9, 10])])
    a = x.clone().requires_grad_(True)
    b = x.clone().requires_grad_(True)
    ours = CircleLoss(m=m, gamma=gamma)(a, labels)
    theirs = pml_losses.CircleLoss(m=m, gamma=gamma)(b, labels)
    ours.backward()
    theirs.backward()
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-9)
    assert torch.allclose(a.grad, b.grad, rtol=1e-6, atol=1e-10)
