"""Multi-class N-pair loss against an explicit loop over anchor-positive pairs."""

from __future__ import annotations

import math

import pytest
import torch

from deepmetric.errors import ConfigError
from deepmetric.functional.masks import label_masks
from deepmetric.functional.npair import masked_logsumexp, npair_loss
from deepmetric.losses import build_loss
from deepmetric.losses.npair import NPairLoss


def loop_npair(x, labels, l2_reg):
    n = x.shape[0]
    terms = []
    for a in range(n):
        for p in range(n):
            if p == a or labels[p] != labels[a]:
                continue
            s_ap = (x[a] * x[p]).sum()
            inner = torch.ones((), dtype=x.dtype)
            for k in range(n):
                if labels[k] != labels[a]:
                    inner = inner + torch.exp((x[a] * x[k]).sum() - s_ap)
            terms.append(torch.log(inner))
    loss = torch.stack(terms).mean() if terms else x.sum() * 0
    return loss + l2_reg * sum((x[i] ** 2).sum() for i in range(n)) / n


def batch(seed=0, sizes=(3, 3, 3), dim=5):
    g = torch.Generator().manual_seed(seed)
    labels = torch.cat([torch.full((s,), c) for c, s in enumerate(sizes)])
    return torch.randn(labels.numel(), dim, generator=g, dtype=torch.float64) * 0.7, labels


@pytest.mark.parametrize("l2_reg", [0.0, 0.02])
def test_value_and_gradient_match_loop(l2_reg):
    x, labels = batch(seed=1, sizes=(3, 2, 4))
    a = x.clone().requires_grad_(True)
    ours = NPairLoss(l2_reg=l2_reg)(a, labels)
    ours.backward()
    b = x.clone().requires_grad_(True)
    ref = loop_npair(b, labels, l2_reg)
    ref.backward()
    assert ours.item() == pytest.approx(ref.item(), rel=1e-10)
    assert torch.allclose(a.grad, b.grad, atol=1e-10)


def test_paper_n_pair_batch():
    """N classes x 2: each anchor against the other classes' samples, by hand for 2 classes."""
    x = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [0.6, 0.8]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1])
    s = x @ x.T
    expected = 0.0
    for a, p in [(0, 1), (1, 0), (2, 3), (3, 2)]:
        negs = [2, 3] if a < 2 else [0, 1]
        expected += math.log(1 + sum(math.exp(s[a, k] - s[a, p]) for k in negs))
    assert NPairLoss(l2_reg=0.0)(x, labels).item() == pytest.approx(expected / 4, rel=1e-12)


def test_gradcheck():
    x, labels = batch(seed=2)
    loss_fn = NPairLoss(l2_reg=0.05)
    assert torch.autograd.gradcheck(lambda e: loss_fn(e, labels), (x.requires_grad_(True),))


def test_edge_cases_finite():
    x, _ = batch(seed=3)
    loss_fn = NPairLoss(l2_reg=0.0)
    for labels in (torch.zeros(9, dtype=torch.long), torch.arange(9)):  # no negative / no positive
        a = x.clone().requires_grad_(True)
        v = loss_fn(a, labels)
        v.backward()
        assert v.item() == 0.0 and torch.all(a.grad == 0)
    dup = torch.ones(6, 3, requires_grad=True)
    v = loss_fn(dup, torch.tensor([0, 0, 1, 1, 2, 2]))
    v.backward()
    assert v.item() == pytest.approx(math.log(5.0)) and torch.isfinite(dup.grad).all()
    # huge similarities: no overflow (log-sum-exp), loss ~ the largest violation
    big = (x * 100).float().requires_grad_(True)
    labels = torch.arange(3).repeat_interleave(3)
    v = loss_fn(big, labels)
    v.backward()
    assert torch.isfinite(v) and torch.isfinite(big.grad).all() and v.item() > 10


def test_masked_logsumexp_empty_rows():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    mask = torch.tensor([[True, False], [False, False]])
    out = masked_logsumexp(x, mask, dim=1)
    assert out[0].item() == pytest.approx(1.0) and out[1].item() == float("-inf")
    out[0].backward()
    assert x.grad.tolist() == [[1.0, 0.0], [0.0, 0.0]]


def test_functional_reference_set():
    x, labels = batch(seed=4)
    ref_labels = torch.tensor([0, 1, 2, 2])
    y = x[[0, 3, 6, 7]]
    s = x @ y.T
    pos, neg = label_masks(labels, ref_labels)
    v = npair_loss(s, pos, neg)
    terms = [
        math.log(1 + sum(math.exp(s[a, k] - s[a, p]) for k in range(4) if neg[a, k]))
        for a in range(9)
        for p in range(4)
        if pos[a, p]
    ]
    assert v.item() == pytest.approx(sum(terms) / len(terms), rel=1e-12)


def test_build_loss_and_bad_config():
    loss = build_loss("npair", l2_reg=0.0)
    assert isinstance(loss, NPairLoss) and loss.higher_is_closer and loss.metric == "dot"
    with pytest.raises(ConfigError, match="l2_reg"):
        build_loss("npair", l2reg=0.1)
    with pytest.raises(ConfigError):
        NPairLoss(l2_reg=-1.0)


def loop_npair_one_per_class(x, labels):
    """Sohn's N-pair-mc by hand: first two samples of each class form its pair."""
    members: dict[int, list[int]] = {}
    for i, c in enumerate(labels.tolist()):
        members.setdefault(c, []).append(i)
    pairs = [(m[0], m[1]) for _, m in sorted(members.items()) if len(m) >= 2]
    terms = []
    for i, (a, p) in enumerate(pairs):
        s_ap = (x[a] * x[p]).sum()
        inner = torch.ones((), dtype=x.dtype)
        for j, (_, p_j) in enumerate(pairs):
            if j != i:
                inner = inner + torch.exp((x[a] * x[p_j]).sum() - s_ap)
        terms.append(torch.log(inner))
    return torch.stack(terms).mean() if terms else x.sum() * 0


@pytest.mark.parametrize("l2_reg", [0.0, 0.02])
def test_one_per_class_value_and_gradient_match_loop(l2_reg):
    g = torch.Generator().manual_seed(7)
    labels = torch.tensor([2, 0, 1, 2, 0, 3, 1, 2, 4, 0])  # shuffled; class 3 and 4 singletons
    x = torch.randn(10, 4, generator=g, dtype=torch.float64)
    a = x.clone().requires_grad_(True)
    ours = NPairLoss(l2_reg=l2_reg, pairs="one_per_class")(a, labels)
    ours.backward()
    b = x.clone().requires_grad_(True)
    ref = loop_npair_one_per_class(b, labels) + l2_reg * (b**2).sum() / 10
    ref.backward()
    assert ours.item() == pytest.approx(ref.item(), rel=1e-10)
    assert torch.allclose(a.grad, b.grad, atol=1e-10)
    # the pure function of (matrix, masks) gives the same value as the fast path
    pos, neg = label_masks(labels)
    loss_fn = NPairLoss(l2_reg=0.0, pairs="one_per_class")
    via_matrix = loss_fn.matrix_loss(x @ x.T, pos, neg)
    assert via_matrix.item() == pytest.approx(loop_npair_one_per_class(x, labels).item(), rel=1e-10)


def test_one_per_class_gradcheck_and_edges():
    x, labels = batch(seed=5, sizes=(2, 3, 2))
    loss_fn = NPairLoss(l2_reg=0.0, pairs="one_per_class")
    assert torch.autograd.gradcheck(lambda e: loss_fn(e, labels), (x.clone().requires_grad_(True),))
    for lab in (torch.arange(7), torch.zeros(7, dtype=torch.long)):  # no pair / one pair only
        a = x.clone().requires_grad_(True)
        v = loss_fn(a, lab)
        v.backward()
        assert v.item() == 0.0 and torch.all(a.grad == 0)
    with pytest.raises(ConfigError, match="pairs"):
        NPairLoss(pairs="one_per_batch")
    pos, neg = label_masks(labels, labels[:3])
    with pytest.raises(ConfigError, match="square"):
        loss_fn.matrix_loss(x @ x[:3].T, pos, neg)
