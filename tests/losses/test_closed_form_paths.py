"""The closed-form-gradient fast paths of the pair losses against their taped formulations.

Each fast path writes d(loss)/d(matrix) by hand; here it is checked with gradcheck (float64) and
against the other, autograd-taped path of the same function on the same inputs.
"""

from __future__ import annotations

import pytest
import torch

import deepmetric.functional.triplet as triplet_mod
from deepmetric.functional.masks import label_masks


def _inputs(seed: int, n_classes: int = 3, per_class: int = 3, cols: int | None = None) -> tuple:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n_classes).repeat_interleave(per_class)
    n = labels.numel()
    matrix = torch.rand(n, n, generator=g, dtype=torch.float64) * 2.0
    pos, neg = label_masks(labels)
    return matrix, pos, neg


@pytest.mark.parametrize("mining", ["all", "semihard"])
@pytest.mark.parametrize("reduction", ["mean", "mean_active", "sum"])
@pytest.mark.parametrize("higher_is_closer", [False, True])
def test_triplet_compared_path_equals_sorted_path(monkeypatch, mining, reduction, higher_is_closer) -> None:
    matrix, pos, neg = _inputs(0, n_classes=4, per_class=3)
    fast_in = matrix.clone().requires_grad_(True)
    fast = triplet_mod.triplet_loss(fast_in, pos, neg, 0.3, mining, higher_is_closer, reduction)
    fast.backward()
    monkeypatch.setattr(triplet_mod, "MAX_POSITIVES_PER_ROW_COMPARED", -1)
    slow_in = matrix.clone().requires_grad_(True)
    slow = triplet_mod.triplet_loss(slow_in, pos, neg, 0.3, mining, higher_is_closer, reduction)
    slow.backward()
    torch.testing.assert_close(fast, slow)
    torch.testing.assert_close(fast_in.grad, slow_in.grad)


def test_triplet_compared_path_in_row_chunks(monkeypatch) -> None:
    matrix, pos, neg = _inputs(1, n_classes=3, per_class=4)
    whole = triplet_mod.triplet_loss(matrix, pos, neg, 0.3, "all")
    monkeypatch.setattr(triplet_mod, "_CHUNK_ENTRIES", 1)  # one row per chunk
    torch.testing.assert_close(triplet_mod.triplet_loss(matrix, pos, neg, 0.3, "all"), whole)


@pytest.mark.parametrize("mining", ["all", "semihard"])
def test_triplet_compared_path_gradcheck(mining) -> None:
    matrix, pos, neg = _inputs(2)
    matrix.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda m: triplet_mod.triplet_loss(m, pos, neg, 0.25, mining), (matrix,), eps=1e-6, atol=1e-5
    )


def _lifted_inputs(seed: int, labels: list[int]) -> tuple:
    g = torch.Generator().manual_seed(seed)
    y = torch.tensor(labels)
    x = torch.randn(len(labels), 4, generator=g, dtype=torch.float64)
    dist = torch.cdist(x, x) * 0.5
    pos, neg = label_masks(y)
    return dist, pos, neg


@pytest.mark.parametrize("labels", [[0, 0, 0, 1, 1, 1, 2, 2, 2], [0, 0, 1, 1, 2], [0, 0, 0, 0]])
def test_lifted_closed_form_equals_taped(labels) -> None:
    from deepmetric.functional.lifted import lifted_structure_loss, lifted_structure_loss_taped

    dist, pos, neg = _lifted_inputs(3, labels)
    fast_in, slow_in = dist.clone().requires_grad_(True), dist.clone().requires_grad_(True)
    fast, slow = lifted_structure_loss(fast_in, pos, neg, 1.0), lifted_structure_loss_taped(slow_in, pos, neg, 1.0)
    fast.backward()
    slow.backward()
    torch.testing.assert_close(fast, slow)
    torch.testing.assert_close(fast_in.grad, slow_in.grad)
    assert torch.isfinite(fast_in.grad).all()


def test_lifted_closed_form_gradcheck() -> None:
    from deepmetric.functional.lifted import lifted_structure_loss

    dist, pos, neg = _lifted_inputs(4, [0, 0, 0, 1, 1, 2, 2, 2])
    dist.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda d: lifted_structure_loss(d, pos, neg, 1.0), (dist,))


def _cosine_inputs(seed: int, labels: list[int], dtype: torch.dtype = torch.float64) -> tuple:
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.normalize(torch.randn(len(labels), 5, generator=g, dtype=torch.float64), dim=1)
    pos, neg = label_masks(torch.tensor(labels))
    return (x @ x.T).to(dtype), pos, neg


@pytest.mark.parametrize("labels", [[0, 0, 0, 1, 1, 1, 2, 2, 2], [0, 0, 1, 2, 2], [1, 1, 1]])
@pytest.mark.parametrize("alpha", [40.0, 70.0])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("per_positive", [True, False])
def test_angular_closed_form_equals_taped(monkeypatch, labels, alpha, dtype, per_positive) -> None:
    import deepmetric.functional.angular as angular_mod
    from deepmetric.functional.angular import angular_loss, angular_loss_taped

    if not per_positive:  # force the dense N x N matrix-product form
        monkeypatch.setattr(angular_mod, "PER_POSITIVE_MAX_ENTRIES", -1)

    sim, pos, neg = _cosine_inputs(5, labels, dtype)
    fast_in, slow_in = sim.clone().requires_grad_(True), sim.clone().requires_grad_(True)
    fast, slow = angular_loss(fast_in, pos, neg, alpha), angular_loss_taped(slow_in, pos, neg, alpha)
    fast.backward()
    slow.backward()
    assert fast.dtype == dtype and fast_in.grad.dtype == dtype
    torch.testing.assert_close(fast, slow)
    torch.testing.assert_close(fast_in.grad, slow_in.grad)


@pytest.mark.parametrize("per_positive", [True, False])
def test_angular_closed_form_gradcheck(monkeypatch, per_positive) -> None:
    import deepmetric.functional.angular as angular_mod
    from deepmetric.functional.angular import angular_loss

    if not per_positive:
        monkeypatch.setattr(angular_mod, "PER_POSITIVE_MAX_ENTRIES", -1)

    sim, pos, neg = _cosine_inputs(6, [0, 0, 0, 1, 1, 2, 2, 2])
    sim.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda s: angular_loss(s, pos, neg, 45.0), (sim,))


@pytest.mark.parametrize("squared", [False, True])
@pytest.mark.parametrize("reduction", ["mean", "mean_active", "sum"])
@pytest.mark.parametrize("square", [True, False])
def test_contrastive_closed_form_equals_taped(squared, reduction, square) -> None:
    from deepmetric.functional.contrastive import contrastive_loss

    dist, pos, neg = _lifted_inputs(7, [0, 0, 0, 1, 1, 2, 2, 2])
    if not square:
        dist, pos, neg = dist[:5], pos[:5], neg[:5]
    fast_in, slow_in = dist.clone().requires_grad_(True), dist.clone().requires_grad_(True)
    kwargs = dict(pos_margin=0.2, neg_margin=0.9, squared=squared, reduction=reduction)
    fast = contrastive_loss(fast_in, pos, neg, **kwargs)
    # unit weights take the taped weighted path: the same loss
    slow = contrastive_loss(slow_in, pos, neg, pos_weight=torch.ones_like(dist), **kwargs)
    fast.backward()
    slow.backward()
    torch.testing.assert_close(fast, slow)
    torch.testing.assert_close(fast_in.grad, slow_in.grad)


def test_contrastive_closed_form_gradcheck() -> None:
    from deepmetric.functional.contrastive import contrastive_loss

    dist, pos, neg = _lifted_inputs(8, [0, 0, 0, 1, 1, 2, 2, 2])
    dist.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda d: contrastive_loss(d, pos, neg, pos_margin=0.1, neg_margin=1.0, squared=True), (dist,)
    )


@pytest.mark.parametrize("with_y", [False, True])
def test_euclidean_closed_form_equals_taped_distances(with_y) -> None:
    from deepmetric.functional.closed_form import euclidean_distances_closed_form
    from deepmetric.functional.distances import euclidean_distance_matrix

    g = torch.Generator().manual_seed(9)
    x = torch.randn(6, 3, generator=g, dtype=torch.float64)
    x[4] = x[1]  # a duplicate: zero distance, zero (never NaN) gradient
    y = torch.cat([torch.randn(3, 3, generator=g, dtype=torch.float64), x[:1]]) if with_y else None
    upstream = torch.randn(6, 4 if with_y else 6, generator=g, dtype=torch.float64)
    grads = []
    for fn in (euclidean_distances_closed_form, euclidean_distance_matrix):
        xi = x.clone().requires_grad_(True)
        yi = y.clone().requires_grad_(True) if with_y else None
        out = fn(xi, yi)
        (out * upstream).sum().backward()
        grads.append((out.detach(), xi.grad, yi.grad if with_y else None))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=0, atol=0)
    torch.testing.assert_close(grads[0][1], grads[1][1])
    if with_y:
        torch.testing.assert_close(grads[0][2], grads[1][2])
    assert torch.isfinite(grads[0][1]).all()


def test_euclidean_closed_form_gradcheck() -> None:
    from deepmetric.functional.closed_form import euclidean_distances_closed_form

    g = torch.Generator().manual_seed(10)
    x = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: euclidean_distances_closed_form(a), (x,))
    assert torch.autograd.gradcheck(euclidean_distances_closed_form, (x, y))
