"""Ranked List Loss against an explicit per-query loop, plus limits and edge cases."""

from __future__ import annotations

import math

import pytest
import torch

from deepmetric.errors import ConfigError
from deepmetric.functional.distances import euclidean_distance_matrix
from deepmetric.functional.masks import label_masks
from deepmetric.functional.ranked_list import ranked_list_loss, ranked_list_weights
from deepmetric.losses import build_loss
from deepmetric.losses.ranked_list import RankedListLoss


def reference_loss(x, y, variant="cvpr", alpha=1.2, margin=0.4, t_n=10.0, t_p=0.0, lam=0.5):
    """Slow loop over queries i and their ranked lists j != i; weights built from detached d."""
    n = x.shape[0]
    total = torch.tensor(0.0, dtype=x.dtype)
    for i in range(n):
        num_p = den_p = num_n = den_n = 0.0
        for j in range(n):
            if j == i:
                continue
            d = torch.sqrt(((x[i] - x[j]) ** 2).sum())
            dv = d.item()
            if y[i] == y[j] and dv > alpha - margin:
                w = math.exp(t_p * (dv - (alpha - margin)))
                num_p = num_p + w * (d - (alpha - margin))
                den_p += w
            elif y[i] != y[j] and dv < alpha:
                w = math.exp(t_n * (alpha - dv))
                num_n = num_n + w * (alpha - d)
                den_n += w
        lp = num_p / den_p if den_p > 0 else 0.0
        ln = num_n / den_n if den_n > 0 else 0.0
        c_p = 1.0 if variant == "cvpr" else 1.0 - lam
        total = total + c_p * lp + lam * ln
    return total / n


def make_batch(seed=0, classes=3, per_class=3, dim=5, spread=0.6):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=g, dtype=torch.float64)
    y = torch.arange(classes).repeat_interleave(per_class)
    x = centres[y] + spread * torch.randn(classes * per_class, dim, generator=g, dtype=torch.float64)
    return x / x.norm(dim=1, keepdim=True), y


def away_from_kinks(x, alpha=1.2, margin=0.4):
    d = euclidean_distance_matrix(x)
    return bool(((d - alpha).abs() > 1e-3).all() and ((d - (alpha - margin)).abs() > 1e-3).all())


OPTIONS = [
    {},
    {"variant": "tpami"},
    {"variant": "tpami", "t_p": 3.0, "lam": 0.3},
    {"t_n": 0.0, "margin": 0.2, "alpha": 1.0},
]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("options", OPTIONS)
def test_value_and_gradient_match_loop(options, seed):
    x, y = make_batch(seed=seed)
    x1 = x.clone().requires_grad_(True)
    out = RankedListLoss(**options)(x1, y)
    out.backward()
    x2 = x.clone().requires_grad_(True)
    ref = reference_loss(x2, y, **options)
    ref.backward()
    assert ref.item() > 0  # the batch has active constraints
    assert out.item() == pytest.approx(ref.item(), rel=1e-10)
    assert torch.allclose(x1.grad, x2.grad, rtol=1e-8, atol=1e-12)


def test_large_negative_temperature_keeps_only_hardest_negative():
    x, y = make_batch(seed=2, classes=3, per_class=4, spread=0.8)
    d = euclidean_distance_matrix(x)
    pos, neg = label_masks(y)
    w = ranked_list_weights(d, pos, neg, t_n=1e4)
    checked = 0
    for i in range(len(y)):
        active = [j for j in range(len(y)) if y[j] != y[i] and d[i, j] < 1.2]
        if not active:
            assert w.neg_weights[i].sum() == 0
            continue
        hardest = min(active, key=lambda j: d[i, j].item())
        assert w.neg_weights[i, hardest].item() == pytest.approx(1.0, abs=1e-9)
        assert w.neg_weights[i].sum().item() == pytest.approx(1.0, abs=1e-12)
        checked += len(active) > 1
    assert checked > 0
    # the loss itself stays finite (no overflow of exp(T_n (alpha - d)))
    assert torch.isfinite(ranked_list_loss(d, pos, neg, t_n=1e4))


def test_zero_margin_zero_temperature_is_mean_hinge_around_alpha():
    """m = 0, T_n = T_p = 0: L(i) = mean_{pos, d > a}(d - a) + lam mean_{neg, d < a}(a - d)."""
    x, y = make_batch(seed=4, classes=3, per_class=4)
    alpha, lam = 1.1, 0.7
    n = len(y)
    total = 0.0
    for i in range(n):
        dists = [(j, torch.linalg.norm(x[i] - x[j]).item()) for j in range(n) if j != i]
        p = [dv - alpha for j, dv in dists if y[j] == y[i] and dv > alpha]
        q = [alpha - dv for j, dv in dists if y[j] != y[i] and dv < alpha]
        total += (sum(p) / len(p) if p else 0.0) + lam * (sum(q) / len(q) if q else 0.0)
    loss = RankedListLoss(alpha=alpha, margin=0.0, t_n=0.0, t_p=0.0, lam=lam)(x, y)
    assert total > 0
    assert loss.item() == pytest.approx(total / n, rel=1e-12)


def test_gradcheck():
    x, y = make_batch(seed=6, classes=2, per_class=3, dim=4)
    assert away_from_kinks(x)
    # T_n = T_p = 0: piecewise smooth, weights constant locally -> exact gradient check
    loss_fn = RankedListLoss(t_n=0.0, variant="tpami")
    assert torch.autograd.gradcheck(lambda z: loss_fn(z, y), (x.clone().requires_grad_(True),))
    # T_n = 10: the weights are constants, so check against weights frozen at x
    pos, neg = label_masks(y)
    w = ranked_list_weights(euclidean_distance_matrix(x), pos, neg, t_n=10.0)

    def frozen(z):
        d = euclidean_distance_matrix(z)
        per_query = (w.pos_weights * (d - 0.8)).sum(1) + 0.5 * (w.neg_weights * (1.2 - d)).sum(1)
        return per_query.mean()

    z = x.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(frozen, (z,))
    g1 = torch.autograd.grad(RankedListLoss()(z, y), z)[0]
    g2 = torch.autograd.grad(frozen(z), z)[0]
    assert torch.allclose(g1, g2, atol=1e-12)


def test_rectangular_matrix_uses_rows_as_queries():
    """4 queries against the whole batch (N x M): the mean is over the 4 rows."""
    x, y = make_batch(seed=8)
    d = euclidean_distance_matrix(x[:4], x)
    pos, neg = label_masks(y[:4], y)
    pos = pos & (d > 0)  # the queries are in the gallery: drop the self-pairs
    loss = ranked_list_loss(d, pos, neg)
    total = 0.0
    for i in range(4):
        p = [d[i, j].item() - 0.8 for j in range(len(y)) if j != i and y[j] == y[i] and d[i, j] > 0.8]
        q = [
            (math.exp(10 * (1.2 - d[i, j].item())), 1.2 - d[i, j].item())
            for j in range(len(y))
            if y[j] != y[i] and d[i, j] < 1.2
        ]
        total += sum(p) / len(p) if p else 0.0
        total += 0.5 * (sum(a * b for a, b in q) / sum(a for a, _ in q) if q else 0.0)
    assert total > 0
    assert loss.item() == pytest.approx(total / 4, rel=1e-10)


@pytest.mark.parametrize(
    "labels, expect_zero",
    [
        ([0, 1, 2, 3, 4, 5], False),  # no positives: negatives only
        ([1, 1, 1, 1, 1, 1], False),  # one class: positives only
        ([0, 0, 0, 1, 1, 1], True),  # every constraint satisfied (see embeddings below)
    ],
)
def test_edge_cases_are_finite(labels, expect_zero):
    y = torch.tensor(labels)
    x = torch.zeros(6, 3, dtype=torch.float64)
    x[:3, 0] = 1.0
    x[3:, 1] = 1.0
    x[:, 2] = torch.linspace(0, 0.1, 6, dtype=torch.float64)
    if not expect_zero:
        x = x + 0.3 * torch.randn(6, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        x = x * 2.0  # spread positives past alpha - m
    x.requires_grad_(True)
    out = RankedListLoss()(x, y)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(x.grad).all()
    if expect_zero:
        assert out.item() == 0.0 and (x.grad == 0).all()
    else:
        assert out.item() > 0


def test_duplicate_embeddings_finite():
    x = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.5, 0.0]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 0, 1, 1])
    out = RankedListLoss()(x, y)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(x.grad).all()


def test_registry_and_errors():
    loss = build_loss("ranked_list", variant="tpami", t_n=5.0)
    assert isinstance(loss, RankedListLoss) and loss.variant == "tpami"
    with pytest.raises(ConfigError):
        RankedListLoss(variant="eccv")
    with pytest.raises(ConfigError):
        RankedListLoss(margin=2.0)
    with pytest.raises(ConfigError):
        RankedListLoss(t_n=-1.0)
    with pytest.raises(ConfigError, match="Did you mean 'margin'"):
        build_loss("ranked_list", margn=0.3)
