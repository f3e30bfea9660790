"""SupCon (Khosla et al. 2020, L_out) and NT-Xent (SimCLR) against explicit loops, gradcheck, PML."""

from __future__ import annotations

import math

import pytest
import torch

from deepmetric.errors import ConfigError, InputError
from deepmetric.functional.distances import cosine_similarity_matrix
from deepmetric.functional.masks import label_masks
from deepmetric.functional.supcon import ntxent_loss, supcon_loss
from deepmetric.losses import build_loss
from deepmetric.losses.base import PairLoss
from deepmetric.losses.supcon import NTXentLoss, SupConLoss


def cos(u, v):
    return (u * v).sum() / torch.sqrt((u * u).sum() * (v * v).sum())


def loop_supcon(x, labels, tau):
    """Slow reference: per anchor with positives, -mean over positives of log softmax over all
    other samples (L_out), then the mean over those anchors."""
    n = x.shape[0]
    terms = []
    for i in range(n):
        pos = [p for p in range(n) if p != i and labels[p] == labels[i]]
        if not pos:
            continue
        denom = sum(torch.exp(cos(x[i], x[a]) / tau) for a in range(n) if a != i)
        terms.append(-sum(torch.log(torch.exp(cos(x[i], x[p]) / tau) / denom) for p in pos) / len(pos))
    if not terms:
        return x.sum() * 0.0
    return sum(terms) / len(terms)


def loop_ntxent(x, tau):
    n2 = x.shape[0]
    half = n2 // 2
    total = x.new_zeros(())
    for i in range(n2):
        j = i + half if i < half else i - half
        denom = sum(torch.exp(cos(x[i], x[k]) / tau) for k in range(n2) if k != i)
        total = total - torch.log(torch.exp(cos(x[i], x[j]) / tau) / denom)
    return total / n2


def data(seed=0, n=10, dim=5):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 3, 4][:n])  # 3 and 4: no positive
    return x, labels


# ------------------------------------------------------------------------------------- SupCon


@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_supcon_value_and_gradient_match_loop(tau: float) -> None:
    x, labels = data()
    a = x.clone().requires_grad_(True)
    out = SupConLoss(temperature=tau)(a, labels)
    out.backward()
    b = x.clone().requires_grad_(True)
    ref = loop_supcon(b, labels, tau)
    ref.backward()
    assert out.item() == pytest.approx(ref.item(), rel=1e-10)
    assert torch.allclose(a.grad, b.grad, rtol=1e-7, atol=1e-11)


def test_supcon_gradcheck_float64() -> None:
    x, labels = data(1)
    pos, neg = label_masks(labels)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda e: supcon_loss(cosine_similarity_matrix(e), pos, neg, 0.3), (x,))


def test_supcon_degenerate_batches() -> None:
    loss = SupConLoss()
    cases = {
        "no positives": (torch.randn(4, 3), torch.arange(4), 0.0),
        "single sample": (torch.randn(1, 3), torch.tensor([1]), 0.0),
        "one class": (torch.randn(4, 3), torch.zeros(4, dtype=torch.long), None),
        "duplicates": (torch.ones(4, 3), torch.tensor([0, 0, 1, 1]), math.log(3.0)),
        "zero vector": (torch.cat([torch.zeros(1, 3), torch.randn(3, 3)]), torch.tensor([0, 0, 1, 1]), None),
    }
    for what, (x, labels, expected) in cases.items():
        x = x.clone().requires_grad_(True)
        out = loss(x, labels)
        out.backward()
        assert torch.isfinite(out) and torch.isfinite(x.grad).all(), what
        if expected is not None:
            assert out.item() == pytest.approx(expected, abs=1e-6), what
    # one class: every other sample is a positive and the loss is still the loop's
    x = torch.randn(4, 3, dtype=torch.float64)
    labels = torch.zeros(4, dtype=torch.long)
    assert loss(x, labels).item() == pytest.approx(loop_supcon(x, labels, 0.1).item(), rel=1e-10)


def test_supcon_is_a_cosine_pair_loss() -> None:
    loss = build_loss("supcon")
    assert isinstance(loss, SupConLoss) and isinstance(loss, PairLoss)
    assert loss.metric == "cosine" and loss.temperature == 0.1
    with pytest.raises(ConfigError, match="temperature"):
        SupConLoss(temperature=0.0)


def test_supcon_agrees_with_pml() -> None:
    """Same L_out formula and the same anchors (PML drops anchors without positives as zero
    losses in its AvgNonZeroReducer); anchors without positives are in the batch."""
    pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
    torch.manual_seed(2)
    x = torch.randn(30, 8, dtype=torch.float64)
    labels = torch.cat([torch.arange(6).repeat_interleave(4), torch.arange(6, 12)])
    a = x.clone().requires_grad_(True)
    b = x.clone().requires_grad_(True)
    ours = SupConLoss(0.1)(a, labels)
    theirs = pml_losses.SupConLoss(temperature=0.1)(b, labels)
    ours.backward()
    theirs.backward()
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-9)
    assert torch.allclose(a.grad, b.grad, rtol=1e-6, atol=1e-10)


# ------------------------------------------------------------------------------------- NT-Xent


@pytest.mark.parametrize("tau", [0.5, 0.1])
def test_ntxent_value_and_gradient_match_loop(tau: float) -> None:
    x, _ = data(3, n=10)
    a = x.clone().requires_grad_(True)
    out = NTXentLoss(temperature=tau)(a, None)
    out.backward()
    b = x.clone().requires_grad_(True)
    ref = loop_ntxent(b, tau)
    ref.backward()
    assert out.item() == pytest.approx(ref.item(), rel=1e-10)
    assert torch.allclose(a.grad, b.grad, rtol=1e-7, atol=1e-11)


def test_ntxent_ignores_labels_beyond_the_layout_check() -> None:
    x, _ = data(4, n=8)
    loss = NTXentLoss()
    item_ids = torch.arange(4).repeat(2)
    classes = torch.tensor([0, 0, 1, 1, 0, 0, 1, 1])  # same-class items stay negatives
    assert loss(x, item_ids).item() == loss(x, classes).item() == loss(x).item()


def test_ntxent_gradcheck_float64() -> None:
    x, _ = data(5, n=8)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda e: ntxent_loss(cosine_similarity_matrix(e), 0.5), (x,))


def test_ntxent_layout_errors_are_one_line_and_name_the_layout() -> None:
    loss = build_loss("ntxent")
    assert isinstance(loss, NTXentLoss) and loss.temperature == 0.5
    bad = {
        "odd batch": (torch.randn(7, 3), None),
        "not two views per item": (torch.randn(8, 3), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])),
    }
    for what, (x, labels) in bad.items():
        with pytest.raises(InputError, match="two-view layout") as err:
            loss(x, labels)
        assert "\n" not in str(err.value), what
    with pytest.raises(InputError, match="two-view layout"):
        ntxent_loss(torch.randn(4, 6))
    with pytest.raises(ConfigError, match="temperature"):
        NTXentLoss(temperature=-1.0)


def test_ntxent_degenerate_batches() -> None:
    loss = NTXentLoss()
    cases = {
        "one item (two views)": torch.randn(2, 3),
        "duplicates": torch.ones(6, 3),
        "zero vector": torch.cat([torch.zeros(1, 3), torch.randn(5, 3)]),
    }
    for what, x in cases.items():
        x = x.clone().requires_grad_(True)
        out = loss(x)
        out.backward()
        assert torch.isfinite(out) and torch.isfinite(x.grad).all(), what
    assert loss(torch.randn(2, 3)).item() == pytest.approx(0.0, abs=1e-7)  # only the positive
    assert loss(torch.ones(6, 3)).item() == pytest.approx(math.log(5.0), rel=1e-6)
    empty = loss(torch.zeros(0, 3, requires_grad=True))
    assert empty.item() == 0.0 and empty.requires_grad


def test_ntxent_agrees_with_pml_given_item_ids() -> None:
    pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
    torch.manual_seed(6)
    x = torch.randn(24, 8, dtype=torch.float64)
    item_ids = torch.arange(12).repeat(2)
    a = x.clone().requires_grad_(True)
    b = x.clone().requires_grad_(True)
    ours = NTXentLoss(0.5)(a, item_ids)
    theirs = pml_losses.NTXentLoss(temperature=0.5)(b, item_ids)
    ours.backward()
    theirs.backward()
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-9)
    assert torch.allclose(a.grad, b.grad, rtol=1e-6, atol=1e-10)
