"""Multi-similarity loss and mining against an explicit per-anchor loop (Wang et al., CVPR 2019)."""

from __future__ import annotations

import math

import pytest
import torch

from deepmetric.errors import ConfigError
from deepmetric.functional.distances import cosine_similarity_matrix
from deepmetric.functional.masks import label_masks
from deepmetric.functional.multi_similarity import (
    masked_log1p_sum_exp,
    multi_similarity_loss,
    multi_similarity_mining,
)
from deepmetric.losses import build_loss
from deepmetric.losses.multi_similarity import MultiSimilarityLoss


def clustered(n_classes: int = 3, per_class: int = 3, dim: int = 4, spread: float = 0.6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(n_classes, dim, generator=g, dtype=torch.float64)
    labels = torch.arange(n_classes).repeat_interleave(per_class)
    x = centers[labels] + spread * torch.randn(len(labels), dim, generator=g, dtype=torch.float64)
    return x, labels


def loop_loss(x, labels, alpha=2.0, beta=50.0, base=0.5, eps=0.1, mining=True):
    """Slow reference: one anchor at a time, sets built with Python comparisons."""
    n = x.shape[0]
    unit = [x[i] / torch.sqrt((x[i] * x[i]).sum()) for i in range(n)]
    total = x.new_zeros(())
    kept_pairs = 0
    for i in range(n):
        pos = [j for j in range(n) if j != i and labels[j] == labels[i]]
        neg = [k for k in range(n) if labels[k] != labels[i]]
        s = {j: (unit[i] * unit[j]).sum() for j in range(n)}
        if mining:
            min_pos = min((s[j].item() for j in pos), default=math.inf)
            max_neg = max((s[k].item() for k in neg), default=-math.inf)
            neg = [k for k in neg if s[k].item() + eps > min_pos]
            pos = [j for j in pos if s[j].item() - eps < max_neg]
        kept_pairs += len(pos) + len(neg)
        pos_sum = sum((torch.exp(-alpha * (s[j] - base)) for j in pos), x.new_zeros(()))
        neg_sum = sum((torch.exp(beta * (s[k] - base)) for k in neg), x.new_zeros(()))
        total = total + torch.log(1 + pos_sum) / alpha + torch.log(1 + neg_sum) / beta
    return total / n, kept_pairs


@pytest.mark.parametrize("mining", [True, False])
@pytest.mark.parametrize("seed", [0, 1])
def test_value_and_gradient_match_loop(mining: bool, seed: int) -> None:
    x, labels = clustered(seed=seed)
    x = torch.cat([x, x[:1] + 0.3])  # a 4th member of class 0: unequal class sizes
    labels = torch.cat([labels, labels[:1]])
    a = x.clone().requires_grad_(True)
    ours = MultiSimilarityLoss(mining=mining)(a, labels)
    ours.backward()
    b = x.clone().requires_grad_(True)
    ref, kept = loop_loss(b, labels, mining=mining)
    ref.backward()
    assert ours.item() == pytest.approx(ref.item(), rel=1e-10, abs=1e-12)
    assert torch.allclose(a.grad, b.grad, rtol=1e-8, atol=1e-12)
    n = len(labels)
    total_pairs = n * n - n  # every ordered pair i != j is a positive or a negative
    if mining:
        assert 0 < kept < total_pairs  # the data really exercises the mining


def test_mining_masks_match_loop() -> None:
    x, labels = clustered(n_classes=4, per_class=3, seed=3)
    s = cosine_similarity_matrix(x)
    pos, neg = label_masks(labels)
    kp, kn = multi_similarity_mining(s, pos, neg, epsilon=0.1)
    n = len(labels)
    for i in range(n):
        min_pos = min(s[i, j].item() for j in range(n) if pos[i, j])
        max_neg = max(s[i, k].item() for k in range(n) if neg[i, k])
        for j in range(n):
            assert bool(kn[i, j]) == bool(neg[i, j] and s[i, j].item() + 0.1 > min_pos)
            assert bool(kp[i, j]) == bool(pos[i, j] and s[i, j].item() - 0.1 < max_neg)
    assert not kp.requires_grad and not kn.requires_grad


def test_gradcheck_float64_away_from_mining_boundaries() -> None:
    x, labels = clustered(seed=4)
    s = cosine_similarity_matrix(x)
    pos, neg = label_masks(labels)
    min_pos = s.masked_fill(~pos, math.inf).amin(1, keepdim=True)
    max_neg = s.masked_fill(~neg, -math.inf).amax(1, keepdim=True)
    assert ((s + 0.1 - min_pos).abs()[neg] > 1e-3).all()
    assert ((s - 0.1 - max_neg).abs()[pos] > 1e-3).all()
    loss = MultiSimilarityLoss(beta=10.0)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda e: loss(e, labels), (x,))


def test_one_class_and_all_distinct_labels() -> None:
    x, _ = clustered(n_classes=1, per_class=5, seed=5)
    same = torch.zeros(5, dtype=torch.long)
    distinct = torch.arange(5)
    for labels in (same, distinct):
        a = x.clone().requires_grad_(True)
        mined = MultiSimilarityLoss()(a, labels)  # no negative / no positive: nothing kept
        mined.backward()
        assert mined.item() == 0.0 and torch.all(a.grad == 0)
        b = x.clone().requires_grad_(True)
        plain = MultiSimilarityLoss(mining=False)(b, labels)
        plain.backward()
        ref, _ = loop_loss(x, labels, mining=False)
        assert plain.item() == pytest.approx(ref.item(), rel=1e-10)
        assert torch.isfinite(b.grad).all()


def test_duplicates_and_extreme_scales_stay_finite() -> None:
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 1e-3]], requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1])
    loss = MultiSimilarityLoss(alpha=500.0, beta=5000.0, mining=False)(x, labels)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()
    # all similarities ~1: each anchor's negative term is log(1 + 2 e^{2500}) / 5000 (a naive exp
    # overflows) and its positive term log(1 + e^{-250}) / 500 ~ 0
    assert loss.item() == pytest.approx(0.5 + math.log(2.0) / 5000, rel=1e-5)


def test_masked_log1p_sum_exp() -> None:
    x = torch.tensor([[-3.0, 2.0, 800.0], [1.0, -1.0, 0.5]], dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True, True, False], [False, False, False]])
    out = masked_log1p_sum_exp(x, mask, dim=1)
    assert out[0].item() == pytest.approx(math.log(1 + math.exp(-3) + math.exp(2)), rel=1e-12)
    assert out[1].item() == 0.0
    out.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad[1].abs().sum() == 0 and x.grad[0, 2] == 0
    big = torch.tensor([[1000.0, 999.0]], dtype=torch.float64)
    val = masked_log1p_sum_exp(big, torch.ones_like(big, dtype=torch.bool), dim=1)
    assert val.item() == pytest.approx(1000.0 + math.log1p(math.exp(-1.0)), rel=1e-12)


def test_build_loss_and_bad_knobs() -> None:
    loss = build_loss("multi_similarity", alpha=1.0, beta=20.0, base=0.4, epsilon=0.05, mining=False)
    assert isinstance(loss, MultiSimilarityLoss) and loss.beta == 20.0 and not loss.mining
    assert list(loss.parameters()) == []
    with pytest.raises(ConfigError, match="alpha"):
        MultiSimilarityLoss(alpha=0.0)
    with pytest.raises(ConfigError, match="epsilon"):
        MultiSimilarityLoss(epsilon=-1.0)
    with pytest.raises(ConfigError, match="epsilon"):
        build_loss("multi_similarity", epsilonn=0.1)


def test_functional_matches_module_on_given_matrix() -> None:
    x, labels = clustered(seed=6)
    s = cosine_similarity_matrix(x)
    pos, neg = label_masks(labels)
    assert multi_similarity_loss(s, pos, neg).item() == pytest.approx(
        MultiSimilarityLoss()(x, labels).item(), rel=1e-12
    )


def test_fast_gradient_equals_taped_and_second_derivative_is_explicit() -> None:
    x, labels = clustered(seed=7)
    pos, neg = label_masks(labels)
    a = x.clone().requires_grad_(True)
    fast = multi_similarity_loss(cosine_similarity_matrix(a), pos, neg, beta=10.0)
    (g_fast,) = torch.autograd.grad(fast, a)
    b = x.clone().requires_grad_(True)
    taped = multi_similarity_loss(cosine_similarity_matrix(b), pos, neg, beta=10.0, double_backward=True)
    (g_taped,) = torch.autograd.grad(taped, b, create_graph=True)
    assert fast.item() == pytest.approx(taped.item(), rel=1e-12)
    assert torch.allclose(g_fast, g_taped, rtol=1e-10, atol=1e-14)
    assert torch.autograd.gradgradcheck(
        lambda e: multi_similarity_loss(
            cosine_similarity_matrix(e), pos, neg, beta=10.0, double_backward=True
        ),
        (b,),
    )
    c = x.clone().requires_grad_(True)
    with pytest.raises(ConfigError, match="double_backward=True"):
        loss = multi_similarity_loss(cosine_similarity_matrix(c), pos, neg)
        torch.autograd.grad(loss, c, create_graph=True)
