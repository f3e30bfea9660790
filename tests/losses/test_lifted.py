"""Smooth lifted structured loss against an explicit loop over unordered positive pairs."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from deepmetric.errors import ConfigError, InputError
from deepmetric.functional.distances import euclidean_distance_matrix
from deepmetric.functional.lifted import lifted_structure_loss
from deepmetric.functional.masks import label_masks
from deepmetric.losses import build_loss
from deepmetric.losses.lifted import LiftedStructureLoss


def loop_lifted(x, labels, margin):
    """Song et al.'s formula: unordered positive pairs, 1 / (2|P|) sum [J]_+^2."""
    n = x.shape[0]

    def d(i, j):
        return torch.sqrt(((x[i] - x[j]) ** 2).sum())

    terms = []
    for i, j in itertools.combinations(range(n), 2):
        if labels[i] != labels[j]:
            continue
        inner = torch.zeros((), dtype=x.dtype)
        for k in range(n):
            if labels[k] != labels[i]:
                inner = inner + torch.exp(margin - d(i, k))
        for k in range(n):
            if labels[k] != labels[j]:
                inner = inner + torch.exp(margin - d(j, k))
        if inner > 0:
            terms.append(torch.clamp(torch.log(inner) + d(i, j), min=0) ** 2)
        else:
            terms.append(torch.zeros((), dtype=x.dtype))
    if not terms:
        return x.sum() * 0
    return torch.stack(terms).sum() / (2 * len(terms))


def batch(seed=0, sizes=(3, 3, 3), dim=4, scale=0.6):
    g = torch.Generator().manual_seed(seed)
    labels = torch.cat([torch.full((s,), c) for c, s in enumerate(sizes)])
    return torch.randn(labels.numel(), dim, generator=g, dtype=torch.float64) * scale, labels


def j_values(x, labels, margin):
    d = euclidean_distance_matrix(x)
    pos, neg = label_masks(labels)
    lse = torch.logsumexp((margin - d).masked_fill(~neg, float("-inf")), dim=1)
    j = torch.logaddexp(lse.unsqueeze(1), lse.unsqueeze(0)) + d
    return j[pos]


@pytest.mark.parametrize("margin", [0.5, 1.0])
def test_value_and_gradient_match_loop(margin):
    x, labels = batch(seed=1, sizes=(3, 4, 2))
    assert (j_values(x, labels, margin).abs() > 1e-3).all()
    a = x.clone().requires_grad_(True)
    ours = LiftedStructureLoss(margin=margin)(a, labels)
    ours.backward()
    b = x.clone().requires_grad_(True)
    ref = loop_lifted(b, labels, margin)
    ref.backward()
    assert ref.item() > 0
    assert ours.item() == pytest.approx(ref.item(), rel=1e-10)
    assert torch.allclose(a.grad, b.grad, atol=1e-10)


def test_gradcheck():
    x, labels = batch(seed=2)
    assert (j_values(x, labels, 1.0).abs() > 1e-3).all()
    loss_fn = LiftedStructureLoss(margin=1.0)
    assert torch.autograd.gradcheck(lambda e: loss_fn(e, labels), (x.requires_grad_(True),))


def test_hand_value_two_classes():
    # 1-D points: class 0 at 0 and 1, class 1 at 3 and 5; one positive pair per class
    x = torch.tensor([[0.0], [1.0], [3.0], [5.0]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1])
    m = 1.0
    j01 = math.log(math.exp(m - 3) + math.exp(m - 5) + math.exp(m - 2) + math.exp(m - 4)) + 1
    j23 = math.log(math.exp(m - 3) + math.exp(m - 2) + math.exp(m - 5) + math.exp(m - 4)) + 2
    expected = (max(j01, 0) ** 2 + max(j23, 0) ** 2) / 4
    assert LiftedStructureLoss(margin=m)(x, labels).item() == pytest.approx(expected, rel=1e-12)


def test_edge_cases_finite():
    x, _ = batch(seed=3)
    loss_fn = LiftedStructureLoss()
    for labels in (torch.zeros(9, dtype=torch.long), torch.arange(9)):  # no negative / no positive
        a = x.clone().requires_grad_(True)
        v = loss_fn(a, labels)
        v.backward()
        assert v.item() == 0.0 and torch.all(a.grad == 0)
    # classes far apart, members close: every J < 0 -> no active pair
    labels = torch.tensor([0, 0, 1, 1])
    far = torch.tensor([[0.0, 0.0], [0.0, 0.1], [50.0, 0.0], [50.0, 0.1]], requires_grad=True)
    v = loss_fn(far, labels)
    v.backward()
    assert v.item() == 0.0 and torch.all(far.grad == 0)
    # duplicates and a huge margin (exp(200) overflows float32 without log-sum-exp)
    dup = torch.ones(4, 3, requires_grad=True)
    v = LiftedStructureLoss(margin=200.0)(dup, labels)
    v.backward()
    expected = (200.0 + math.log(4.0)) ** 2 / 2
    assert v.item() == pytest.approx(expected, rel=1e-5) and torch.isfinite(dup.grad).all()


def test_needs_square_matrix_and_build_loss():
    x, labels = batch(seed=4)
    pos, neg = label_masks(labels, labels[:4])
    with pytest.raises(InputError, match="square"):
        lifted_structure_loss(euclidean_distance_matrix(x, x[:4]), pos, neg)
    loss = build_loss("lifted_structure", margin=0.7)
    assert isinstance(loss, LiftedStructureLoss) and loss.margin == 0.7 and not loss.higher_is_closer
    with pytest.raises(ConfigError, match="margin"):
        build_loss("lifted_structure", margn=1.0)
