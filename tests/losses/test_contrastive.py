"""Contrastive loss against an explicit loop over unordered pairs."""

from __future__ import annotations

import itertools

import pytest
import torch

from deepmetric.errors import ConfigError, InputError
from deepmetric.functional.contrastive import contrastive_loss, weighted_contrastive
from deepmetric.functional.distances import euclidean_distance_matrix
from deepmetric.functional.masks import label_masks
from deepmetric.losses import build_loss
from deepmetric.losses.contrastive import ContrastiveLoss


def loop_contrastive(x, labels, pos_margin, neg_margin, squared, reduction, wp=None, wn=None):
    """Slow reference: every unordered pair i < j once, per-kind (weighted) reduction."""
    p = 2 if squared else 1
    sums = {True: [], False: []}  # same label -> list of (weight, loss)
    for i, j in itertools.combinations(range(x.shape[0]), 2):
        d = torch.sqrt(((x[i] - x[j]) ** 2).sum())
        same = bool(labels[i] == labels[j])
        if same:
            loss = torch.clamp(d - pos_margin, min=0) ** p
            w = 1.0 if wp is None else wp[i, j]
        else:
            loss = torch.clamp(neg_margin - d, min=0) ** p
            w = 1.0 if wn is None else wn[i, j]
        sums[same].append((w, loss))
    total = torch.zeros((), dtype=x.dtype)
    for items in sums.values():
        num = sum((w * l for w, l in items), torch.zeros((), dtype=x.dtype))
        if reduction == "sum":
            total = total + num
            continue
        if reduction == "mean":
            den = sum(float(w) for w, _ in items)
        else:
            den = sum(float(w) for w, l in items if l > 0)
        total = total + (num / den if den > 0 else 0.0)
    return total


def batch(seed=0, n_classes=3, per_class=3, dim=4, scale=0.5):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(n_classes * per_class, dim, generator=g, dtype=torch.float64) * scale)
    labels = torch.arange(n_classes).repeat_interleave(per_class)
    return x, labels


def away_from_kinks(x, margins):
    d = euclidean_distance_matrix(x)
    off = ~torch.eye(x.shape[0], dtype=torch.bool)
    return all(bool(((d[off] - m).abs() > 1e-3).all()) for m in margins)


@pytest.mark.parametrize("squared", [False, True])
@pytest.mark.parametrize("reduction", ["mean", "mean_active", "sum"])
def test_value_and_gradient_match_loop(squared, reduction):
    x, labels = batch(seed=1)
    assert away_from_kinks(x, [0.2, 1.0])
    loss_fn = ContrastiveLoss(pos_margin=0.2, neg_margin=1.0, squared=squared, reduction=reduction)
    a = x.clone().requires_grad_(True)
    ours = loss_fn(a, labels)
    ours.backward()
    b = x.clone().requires_grad_(True)
    ref = loop_contrastive(b, labels, 0.2, 1.0, squared, reduction)
    ref.backward()
    assert ours.item() == pytest.approx(ref.item(), rel=1e-10, abs=1e-12)
    assert torch.allclose(a.grad, b.grad, atol=1e-10)
    assert ours.item() > 0


def test_weighted_terms_match_loop():
    x, labels = batch(seed=2)
    g = torch.Generator().manual_seed(5)
    wp = torch.rand(9, 9, generator=g, dtype=torch.float64)
    wn = torch.rand(9, 9, generator=g, dtype=torch.float64)
    wp, wn = (wp + wp.T) / 2, (wn + wn.T) / 2
    pos, neg = label_masks(labels)
    a = x.clone().requires_grad_(True)
    lp, ln = weighted_contrastive(
        euclidean_distance_matrix(a), pos, neg, wp, wn, neg_margin=1.2, squared=True
    )
    ours = 0.3 * lp + 0.7 * ln
    ours.backward()
    # the reference mixes the two kinds with the same coefficients, term by term
    b = x.clone().requires_grad_(True)
    ref_p = loop_contrastive(b, labels, 0.0, 1.2, True, "mean", wp, torch.zeros_like(wn))
    ref_n = loop_contrastive(b, labels, 0.0, 1.2, True, "mean", torch.zeros_like(wp), wn)
    ref = 0.3 * ref_p + 0.7 * ref_n
    ref.backward()
    assert ours.item() == pytest.approx(ref.item(), rel=1e-10)
    assert torch.allclose(a.grad, b.grad, atol=1e-10)


def test_gradcheck():
    x, labels = batch(seed=3)
    assert away_from_kinks(x, [0.1, 1.0])
    loss_fn = ContrastiveLoss(pos_margin=0.1, neg_margin=1.0, squared=False)
    assert torch.autograd.gradcheck(lambda e: loss_fn(e, labels), (x.requires_grad_(True),))


def test_one_class_no_positive_and_no_active_negative():
    x, _ = batch(seed=4)
    loss_fn = ContrastiveLoss(neg_margin=1.0, reduction="mean_active")
    # one class: only the positive term, equal to the mean distance
    one = torch.zeros(9, dtype=torch.long)
    v = loss_fn(x, one)
    d = euclidean_distance_matrix(x)
    iu = torch.triu_indices(9, 9, 1)
    assert v.item() == pytest.approx(d[iu[0], iu[1]].mean().item(), rel=1e-10)
    # all labels distinct: only the negative term
    distinct = torch.arange(9)
    far = x * 100  # every negative beyond the margin -> no active negative -> 0
    a = far.clone().requires_grad_(True)
    v = loss_fn(a, distinct)
    v.backward()
    assert v.item() == 0.0 and torch.all(a.grad == 0)


def test_duplicate_embeddings_finite():
    x = torch.ones(6, 3, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    v = ContrastiveLoss(squared=True)(x, labels)
    v.backward()
    assert torch.isfinite(v) and torch.isfinite(x.grad).all()
    assert v.item() == pytest.approx(1.0)  # every negative at distance 0 costs (1 - 0)^2


def test_functional_non_square_uses_all_entries():
    x, labels = batch(seed=6)
    ref_x, ref_labels = x[:4], labels[:4]
    d = euclidean_distance_matrix(x, ref_x)
    pos, neg = label_masks(labels, ref_labels)
    v = contrastive_loss(d, pos, neg)
    expected = torch.relu(d)[pos].mean() + torch.relu(1.0 - d)[neg].mean()
    assert v.item() == pytest.approx(expected.item(), rel=1e-12)


def test_build_loss_and_bad_config():
    loss = build_loss("contrastive", pos_margin=0.1, neg_margin=0.8, squared=True)
    assert isinstance(loss, ContrastiveLoss) and loss.neg_margin == 0.8
    with pytest.raises(ConfigError, match="neg_margin"):
        build_loss("contrastive", neg_margn=0.5)
    with pytest.raises(ConfigError):
        ContrastiveLoss(pos_margin=1.0, neg_margin=0.5)
    with pytest.raises(ConfigError, match="mean_active"):
        ContrastiveLoss(reduction="mean_activ")
    with pytest.raises(InputError):
        bad_pos = torch.zeros(3, 2, dtype=torch.bool)
        contrastive_loss(torch.zeros(3, 3), bad_pos, torch.zeros(3, 3, dtype=torch.bool))


def test_asymmetric_square_matrix_averages_both_directions():
    """A synthesised matrix can differ at (i, j) and (j, i): both entries count, sum is halved."""
    g = torch.Generator().manual_seed(7)
    d = torch.rand(6, 6, generator=g, dtype=torch.float64) * 1.5
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    pos, neg = label_masks(labels)
    ordered_pos = [d[i, j] for i in range(6) for j in range(6) if pos[i, j]]
    ordered_neg = [max(0.0, 1.0 - d[i, j].item()) for i in range(6) for j in range(6) if neg[i, j]]
    mean = contrastive_loss(d, pos, neg)
    assert mean.item() == pytest.approx(
        (sum(ordered_pos) / len(ordered_pos)).item() + sum(ordered_neg) / len(ordered_neg), rel=1e-12
    )
    total = contrastive_loss(d, pos, neg, reduction="sum")
    assert total.item() == pytest.approx(0.5 * (sum(ordered_pos).item() + sum(ordered_neg)), rel=1e-12)
