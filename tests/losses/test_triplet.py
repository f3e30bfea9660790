"""Triplet loss (all / semi-hard / batch-hard) against explicit loops over triplets."""

from __future__ import annotations

import pytest
import torch

from deepmetric.errors import ConfigError
from deepmetric.functional.distances import cosine_similarity_matrix, euclidean_distance_matrix
from deepmetric.functional.masks import label_masks
from deepmetric.functional.triplet import triplet_loss
from deepmetric.losses import build_loss
from deepmetric.losses.triplet import TripletLoss


def dissimilarity(x, i, j, metric):
    if metric == "euclidean":
        return torch.sqrt(((x[i] - x[j]) ** 2).sum())
    cos = (x[i] * x[j]).sum() / (torch.sqrt((x[i] ** 2).sum()) * torch.sqrt((x[j] ** 2).sum()))
    return -cos


def loop_triplet(x, labels, margin, mining, metric, reduction):
    """Slow reference written from the definitions, one triplet at a time."""
    n = x.shape[0]
    v = [[dissimilarity(x, i, j, metric) for j in range(n)] for i in range(n)]
    losses = []
    for a in range(n):
        pos = [p for p in range(n) if p != a and labels[p] == labels[a]]
        neg = [k for k in range(n) if labels[k] != labels[a]]
        if not pos or not neg:
            continue
        if mining == "all":
            losses += [torch.clamp(v[a][p] - v[a][k] + margin, min=0) for p in pos for k in neg]
        elif mining == "semihard":
            for p in pos:
                farther = [k for k in neg if v[a][k] > v[a][p]]
                if farther:
                    k = min(farther, key=lambda k: v[a][k].item())
                else:
                    k = max(neg, key=lambda k: v[a][k].item())
                losses.append(torch.clamp(v[a][p] - v[a][k] + margin, min=0))
        else:
            p = max(pos, key=lambda p: v[a][p].item())
            k = min(neg, key=lambda k: v[a][k].item())
            losses.append(torch.clamp(v[a][p] - v[a][k] + margin, min=0))
    if not losses:
        return x.sum() * 0
    total = torch.stack(losses).sum()
    if reduction == "sum":
        return total
    if reduction == "mean":
        return total / len(losses)
    active = sum(1 for l in losses if l > 0)
    return total / active if active else total * 0


def batch(seed=0, sizes=(3, 3, 3), dim=4):
    g = torch.Generator().manual_seed(seed)
    labels = torch.cat([torch.full((s,), c) for c, s in enumerate(sizes)])
    x = torch.randn(labels.numel(), dim, generator=g, dtype=torch.float64)
    return x, labels


def margin_gaps(x, labels, margin, metric):
    """Smallest |v_ap - v_an + m| and smallest gap between distinct entries of a row."""
    m = euclidean_distance_matrix(x) if metric == "euclidean" else -cosine_similarity_matrix(x)
    pos, neg = label_masks(labels)
    gaps = (m.unsqueeze(2) - m.unsqueeze(1) + margin)[pos.unsqueeze(2) & neg.unsqueeze(1)]
    off = ~torch.eye(len(labels), dtype=torch.bool)
    row_gaps = (m.unsqueeze(2) - m.unsqueeze(1)).abs()[off.unsqueeze(2) & off.unsqueeze(1)]
    row_gaps = row_gaps[row_gaps > 0]
    return gaps.abs().min().item(), row_gaps.min().item()


CASES = [
    (mining, metric)
    for mining in ("all", "semihard", "batch_hard")
    for metric in ("euclidean", "cosine")
]


@pytest.mark.parametrize("mining,metric", CASES)
@pytest.mark.parametrize("reduction", ["mean", "mean_active", "sum"])
def test_value_and_gradient_match_loop(mining, metric, reduction):
    x, labels = batch(seed=1, sizes=(3, 4, 2))
    margin = 0.3 if metric == "euclidean" else 0.1
    gap, row_gap = margin_gaps(x, labels, margin, metric)
    assert gap > 1e-3 and row_gap > 1e-6
    loss_fn = TripletLoss(margin=margin, mining=mining, metric=metric, reduction=reduction)
    a = x.clone().requires_grad_(True)
    ours = loss_fn(a, labels)
    ours.backward()
    b = x.clone().requires_grad_(True)
    ref = loop_triplet(b, labels, margin, mining, metric, reduction)
    ref.backward()
    assert ref.item() > 0
    assert ours.item() == pytest.approx(ref.item(), rel=1e-9, abs=1e-12)
    assert torch.allclose(a.grad, b.grad, atol=1e-9)


def test_semihard_fallback_uses_farthest_negative():
    # anchor 0 with positive 1 at distance 3; negatives at distance 1 and 2 (both closer)
    x = torch.tensor([[0.0], [3.0], [1.0], [2.0]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1])
    d = euclidean_distance_matrix(x)
    pos, neg = label_masks(labels)
    pos0, neg0 = torch.zeros_like(pos), torch.zeros_like(neg)
    pos0[0], neg0[0] = pos[0], neg[0]
    v = triplet_loss(d, pos0, neg0, margin=0.5, mining="semihard")
    assert v.item() == pytest.approx(3.0 - 2.0 + 0.5)
    # now a negative farther than the positive exists: it is chosen (loss 0 beyond the margin)
    x[3, 0] = 3.2
    d = euclidean_distance_matrix(x)
    v = triplet_loss(d, pos0, neg0, margin=0.5, mining="semihard")
    assert v.item() == pytest.approx(3.0 - 3.2 + 0.5)


@pytest.mark.parametrize("mining", ["all", "semihard", "batch_hard"])
def test_gradcheck(mining):
    x, labels = batch(seed=2)
    gap, row_gap = margin_gaps(x, labels, 0.2, "euclidean")
    assert gap > 1e-3 and row_gap > 1e-3
    loss_fn = TripletLoss(margin=0.2, mining=mining)
    assert torch.autograd.gradcheck(lambda e: loss_fn(e, labels), (x.requires_grad_(True),))


def test_all_matches_dense_bruteforce_on_medium_batch_and_reference_set():
    """The sort/prefix-sum trick against a dense N x N x M computation (independent, small N)."""
    g = torch.Generator().manual_seed(3)
    labels = torch.randint(0, 6, (40,), generator=g)
    ref_labels = torch.randint(0, 6, (30,), generator=g)
    x = torch.randn(40, 8, generator=g, dtype=torch.float64)
    y = torch.randn(30, 8, generator=g, dtype=torch.float64)
    d = euclidean_distance_matrix(x, y)
    pos, neg = label_masks(labels, ref_labels)
    dense = (d.unsqueeze(2) - d.unsqueeze(1) + 1.0).clamp_min(0)
    valid = pos.unsqueeze(2) & neg.unsqueeze(1)
    for reduction in ("mean", "mean_active", "sum"):
        ours = triplet_loss(d, pos, neg, margin=1.0, reduction=reduction)
        total = dense[valid].sum()
        expected = {
            "sum": total,
            "mean": total / valid.sum(),
            "mean_active": total / (dense[valid] > 0).sum(),
        }[reduction]
        assert ours.item() == pytest.approx(expected.item(), rel=1e-10)


@pytest.mark.parametrize("mining", ["all", "semihard", "batch_hard"])
def test_no_triplet_is_zero_and_finite(mining):
    x, _ = batch(seed=4)
    loss_fn = TripletLoss(mining=mining)
    for labels in (torch.zeros(9, dtype=torch.long), torch.arange(9)):
        a = x.clone().requires_grad_(True)
        v = loss_fn(a, labels)
        v.backward()
        assert v.item() == 0.0 and torch.all(a.grad == 0)


@pytest.mark.parametrize("mining", ["all", "semihard", "batch_hard"])
def test_no_active_negative_and_duplicates(mining):
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    # classes far apart, members together: every triplet satisfied
    x = torch.tensor([[0.0, 0.0], [0.0, 0.01], [10.0, 0.0], [10.0, 0.01], [0.0, 10.0], [0.0, 10.01]])
    a = x.clone().requires_grad_(True)
    v = TripletLoss(mining=mining, reduction="mean_active")(a, labels)
    v.backward()
    assert v.item() == 0.0 and torch.all(a.grad == 0)
    dup = torch.ones(6, 3, requires_grad=True)
    v = TripletLoss(mining=mining)(dup, labels)
    v.backward()
    assert v.item() == pytest.approx(0.2) and torch.isfinite(dup.grad).all()


def test_large_batch_runs_in_bounded_memory():
    """1024 x 64, 8 per class (and a degenerate 2-class batch): an N^3 tensor would need 4 GB."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(1024, 64, generator=g).requires_grad_(True)
    pk_labels = torch.arange(128).repeat_interleave(8)
    two_classes = torch.arange(2).repeat_interleave(512)
    cases = [(pk_labels, m) for m in ("all", "semihard", "batch_hard")] + [(two_classes, "all")]
    for labels, mining in cases:
        v = TripletLoss(mining=mining)(x, labels)
        v.backward()
        assert torch.isfinite(v) and v.item() > 0


def test_build_loss_and_bad_config():
    loss = build_loss("triplet", margin=0.1, mining="semihard", metric="cosine")
    assert isinstance(loss, TripletLoss) and loss.higher_is_closer and loss.margin == 0.1
    assert not TripletLoss().higher_is_closer
    x, labels = batch(seed=6)
    s = cosine_similarity_matrix(x)
    pos, neg = label_masks(labels)
    assert loss(x, labels).item() == pytest.approx(loss.matrix_loss(s, pos, neg).item())
    with pytest.raises(ConfigError, match="mining"):
        build_loss("triplet", minning="all")
    with pytest.raises(ConfigError, match="semihard"):
        TripletLoss(mining="semi_hard")
    with pytest.raises(ConfigError, match="cosine"):
        TripletLoss(metric="cosin")
    with pytest.raises(ConfigError):
        TripletLoss(margin=-1.0)
