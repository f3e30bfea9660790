"""Angular loss (N-pair form) against an explicit loop over (anchor, positive, negative)."""

from __future__ import annotations

import math

import pytest
import torch

from deepmetric.errors import ConfigError, InputError
from deepmetric.functional.angular import angular_loss
from deepmetric.functional.distances import cosine_similarity_matrix
from deepmetric.functional.masks import label_masks
from deepmetric.losses import build_loss
from deepmetric.losses.angular import AngularLoss


def loop_angular(x, labels, alpha_degrees, l2_reg):
    n = x.shape[0]
    u = [x[i] / torch.sqrt((x[i] ** 2).sum()) for i in range(n)]
    t2 = math.tan(alpha_degrees * math.pi / 180.0) ** 2
    terms = []
    for a in range(n):
        for p in range(n):
            if p == a or labels[p] != labels[a]:
                continue
            inner = torch.ones((), dtype=x.dtype)
            for k in range(n):
                if labels[k] != labels[a]:
                    f = 4 * t2 * ((u[a] + u[p]) * u[k]).sum() - 2 * (1 + t2) * (u[a] * u[p]).sum()
                    inner = inner + torch.exp(f)
            terms.append(torch.log(inner))
    loss = torch.stack(terms).mean() if terms else x.sum() * 0
    return loss + l2_reg * sum((x[i] ** 2).sum() for i in range(n)) / n


def batch(seed=0, sizes=(3, 3, 3), dim=5):
    g = torch.Generator().manual_seed(seed)
    labels = torch.cat([torch.full((s,), c) for c, s in enumerate(sizes)])
    return torch.randn(labels.numel(), dim, generator=g, dtype=torch.float64), labels


@pytest.mark.parametrize("alpha,l2_reg", [(40.0, 0.0), (55.0, 0.01), (20.0, 0.0)])
def test_value_and_gradient_match_loop(alpha, l2_reg):
    x, labels = batch(seed=1, sizes=(3, 2, 4))
    a = x.clone().requires_grad_(True)
    ours = AngularLoss(alpha_degrees=alpha, l2_reg=l2_reg)(a, labels)
    ours.backward()
    b = x.clone().requires_grad_(True)
    ref = loop_angular(b, labels, alpha, l2_reg)
    ref.backward()
    assert ours.item() == pytest.approx(ref.item(), rel=1e-10)
    assert torch.allclose(a.grad, b.grad, atol=1e-10)


def test_gradcheck():
    x, labels = batch(seed=2)
    loss_fn = AngularLoss(alpha_degrees=45.0, l2_reg=0.01)
    assert torch.autograd.gradcheck(lambda e: loss_fn(e, labels), (x.requires_grad_(True),))


def dense_angular(s, pos, neg, alpha):
    t2 = math.tan(math.radians(alpha)) ** 2
    f = 4 * t2 * (s.unsqueeze(1) + s.unsqueeze(0)) - 2 * (1 + t2) * s.unsqueeze(2)  # [a, p, n]
    f = f.masked_fill(~neg.unsqueeze(1), float("-inf"))
    zeros = torch.zeros_like(f[..., :1])
    return torch.logsumexp(torch.cat([zeros, f], dim=2), dim=2)[pos].mean()


@pytest.mark.parametrize("alpha", [40.0, 55.0, 70.0, 80.0])
def test_matches_dense_bruteforce_float32(alpha):
    """The matrix-product form against a dense (a, p, n) log-sum-exp in float64, computed in
    float32 from cosine similarities, including large alphas (huge exponents)."""
    g = torch.Generator().manual_seed(3)
    labels = torch.randint(0, 5, (30,), generator=g)
    pos, neg = label_masks(labels)
    s = cosine_similarity_matrix(torch.randn(30, 6, generator=g, dtype=torch.float64))
    dense = dense_angular(s, pos, neg, alpha)
    ours = angular_loss(s.float(), pos, neg, alpha)
    assert ours.dtype == torch.float32 and torch.isfinite(ours)
    assert ours.item() == pytest.approx(dense.item(), rel=1e-5)
    assert angular_loss(s, pos, neg, alpha).item() == pytest.approx(dense.item(), rel=1e-12)
    # a matrix far outside [-1, 1] stays exact in float64 (row shifts prevent overflow)
    if alpha == 40.0:
        assert angular_loss(s * 30, pos, neg).item() == pytest.approx(
            dense_angular(s * 30, pos, neg, alpha).item(), rel=1e-10
        )


def test_edge_cases_finite():
    x, _ = batch(seed=4)
    loss_fn = AngularLoss()
    for labels in (torch.zeros(9, dtype=torch.long), torch.arange(9)):  # no negative / no positive
        a = x.clone().requires_grad_(True)
        v = loss_fn(a, labels)
        v.backward()
        assert v.item() == 0.0 and torch.all(a.grad == 0)
    # duplicates: all similarities 1, f = 4t^2 * 2 - 2(1 + t^2) for each of 4 negatives
    dup = torch.ones(6, 3, requires_grad=True)
    v = loss_fn(dup, torch.tensor([0, 0, 1, 1, 2, 2]))
    v.backward()
    t2 = math.tan(math.radians(40.0)) ** 2
    assert v.item() == pytest.approx(math.log(1 + 4 * math.exp(8 * t2 - 2 * (1 + t2))), rel=1e-5)
    assert torch.isfinite(dup.grad).all()


def test_needs_square_matrix_and_build_loss():
    x, labels = batch(seed=5)
    pos, neg = label_masks(labels, labels[:3])
    with pytest.raises(InputError, match="square"):
        angular_loss(cosine_similarity_matrix(x, x[:3]), pos, neg)
    loss = build_loss("angular", alpha_degrees=45.0)
    assert isinstance(loss, AngularLoss) and loss.higher_is_closer and loss.metric == "cosine"
    with pytest.raises(ConfigError, match="alpha_degrees"):
        build_loss("angular", alpha=45.0)
    with pytest.raises(ConfigError):
        AngularLoss(alpha_degrees=85.0)
    with pytest.raises(ConfigError):
        AngularLoss(alpha_degrees=0.0)
    with pytest.raises(ConfigError):
        AngularLoss(l2_reg=-0.1)
