"""Symmetrical synthesis (Gu and Ko, AAAI 2020): reflection geometry, pairing, hardest-of-four
mining against explicit loops, gradients, the disabled switch, and wrapping real base losses."""

from __future__ import annotations

import math
from typing import ClassVar

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from deepmetric.errors import ConfigError
from deepmetric.functional import synthesis as fs
from deepmetric.functional.masks import label_masks
from deepmetric.functional.synthesis import (
    next_in_class,
    reflect,
    symmetrical_synthesis_matrix,
    synthesize_pairs,
)
from deepmetric.losses import build_loss
from deepmetric.losses.base import MetricLoss, PairLoss
from deepmetric.losses.synthesis import SymmetricalSynthesis

DT = torch.float64


class SmoothEuclideanLoss(PairLoss):
    """A simple smooth pair loss for the tests: mean d^2 over positives + mean softplus(1 - d)
    over negatives (no hinge kinks, so gradcheck is well defined everywhere)."""

    metric: ClassVar[str] = "euclidean"

    def matrix_loss(self, matrix: Tensor, pos_mask: Tensor, neg_mask: Tensor) -> Tensor:
        pos = (matrix.pow(2) * pos_mask).sum() / pos_mask.sum().clamp_min(1)
        neg = (F.softplus(1.0 - matrix) * neg_mask).sum() / neg_mask.sum().clamp_min(1)
        return pos + neg


class SmoothCosineLoss(PairLoss):
    """Similarity version: mean (1 - s) over positives + mean softplus(4 s) over negatives,
    plus a small L2 regulariser on the raw embeddings (like N-pair's)."""

    metric: ClassVar[str] = "cosine"

    def matrix_loss(self, matrix: Tensor, pos_mask: Tensor, neg_mask: Tensor) -> Tensor:
        pos = ((1.0 - matrix) * pos_mask).sum() / pos_mask.sum().clamp_min(1)
        neg = (F.softplus(4.0 * matrix) * neg_mask).sum() / neg_mask.sum().clamp_min(1)
        return pos + neg

    def regularizer(self, embeddings: Tensor) -> Tensor:
        return 1e-2 * embeddings.pow(2).sum(dim=1).mean()


class NotAPairLoss(MetricLoss):
    def compute(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        return embeddings.sum() * 0.0


def _batch(labels: list[int], dim: int = 5, seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(labels), dim, generator=g, dtype=DT)
    return x, torch.tensor(labels)


# ---------------------------------------------------------------- reflection geometry


def test_reflection_keeps_norm_and_angle_to_axis() -> None:
    x, _ = _batch([0] * 8, dim=6, seed=1)
    axes, _ = _batch([0] * 8, dim=6, seed=2)
    r = reflect(x, axes)
    torch.testing.assert_close(r.norm(dim=1), x.norm(dim=1))
    torch.testing.assert_close(F.cosine_similarity(r, axes), F.cosine_similarity(x, axes))
    # and it really moved (not the identity): the component orthogonal to the axis flipped
    assert (r - x).norm(dim=1).min() > 1e-3


def test_reflecting_twice_returns_the_point() -> None:
    x, _ = _batch([0] * 8, dim=6, seed=3)
    axes, _ = _batch([0] * 8, dim=6, seed=4)
    torch.testing.assert_close(reflect(reflect(x, axes), axes), x)


def test_reflection_hand_computed_and_generalised_form() -> None:
    x = torch.tensor([[1.0, 0.0]], dtype=DT)
    axis = torch.tensor([[2.0, 2.0]], dtype=DT)  # the diagonal; scale of the axis is irrelevant
    torch.testing.assert_close(reflect(x, axis), torch.tensor([[0.0, 1.0]], dtype=DT))
    # beta * (alpha * proj - x) with proj = (0.5, 0.5): alpha=3, beta=0.5 -> 0.5 * (0.5, 1.5)
    torch.testing.assert_close(
        reflect(x, axis, alpha=3.0, beta=0.5), torch.tensor([[0.25, 0.75]], dtype=DT)
    )


def test_zero_axis_gives_finite_points() -> None:
    x = torch.tensor([[1.0, 2.0]], dtype=DT)
    out = reflect(x, torch.zeros(1, 2, dtype=DT))
    assert torch.isfinite(out).all()


# ---------------------------------------------------------------- pairing


def test_next_in_class_matches_loop() -> None:
    labels = [3, 1, 3, 2, 1, 3, 2, 7]
    expected = []
    for j, y in enumerate(labels):
        same = [k for k, z in enumerate(labels) if z == y]
        after = [k for k in same if k > j]
        expected.append(after[0] if after else same[0])
    assert next_in_class(torch.tensor(labels)).tolist() == expected


# ---------------------------------------------------------------- hardest of four


def _explicit_reflect(x: list[float], axis: list[float], alpha: float, beta: float) -> list[float]:
    dot = sum(a * b for a, b in zip(x, axis))
    sq = sum(a * a for a in axis)
    return [beta * (alpha * dot / sq * a - b) for a, b in zip(axis, x)]


def _explicit_matrix(
    x: Tensor, labels: list[int], metric: str, alpha: float, beta: float
) -> Tensor:
    """Slow reference: per anchor i and negative column j, the hardest of the four points of the
    pair (j, next sample of j's class in batch order, cyclic)."""
    rows = x.tolist()

    def m(a: list[float], b: list[float]) -> float:
        if metric == "euclidean":
            return math.sqrt(sum((p - q) ** 2 for p, q in zip(a, b)))
        if metric == "dot":
            return sum(p * q for p, q in zip(a, b))
        na = math.sqrt(sum(p * p for p in a))
        nb = math.sqrt(sum(q * q for q in b))
        return sum(p * q for p, q in zip(a, b)) / (na * nb)

    n = len(labels)
    out = torch.zeros(n, n, dtype=DT)
    for i in range(n):
        for j in range(n):
            if labels[i] == labels[j]:
                out[i, j] = 0.0 if i == j and metric == "euclidean" else m(rows[i], rows[j])
                continue
            same = [k for k in range(n) if labels[k] == labels[j]]
            later = [k for k in same if k > j]
            nu = later[0] if later else same[0]
            candidates = [
                rows[j],
                rows[nu],
                _explicit_reflect(rows[j], rows[nu], alpha, beta),
                _explicit_reflect(rows[nu], rows[j], alpha, beta),
            ]
            values = [m(rows[i], c) for c in candidates]
            out[i, j] = max(values) if metric in ("cosine", "dot") else min(values)
    return out


@pytest.mark.parametrize("loss_cls", [SmoothEuclideanLoss, SmoothCosineLoss])
@pytest.mark.parametrize(
    "labels",
    [
        [0, 1, 2, 0, 1, 2],  # P x 2: the paper's setting
        [2, 0, 1, 1, 0, 2, 0, 1, 2, 5],  # P x 3 shuffled, plus a singleton class
    ],
)
@pytest.mark.parametrize("alpha,beta", [(2.0, 1.0), (1.5, 0.8)])
def test_hardest_of_four_matches_loop(
    loss_cls: type[PairLoss], labels: list[int], alpha: float, beta: float
) -> None:
    x, y = _batch(labels, dim=4, seed=5)
    base = loss_cls()
    got = symmetrical_synthesis_matrix(x, y, base.pair_matrix, base.higher_is_closer, alpha, beta)
    expected = _explicit_matrix(x, labels, base.metric, alpha, beta)
    torch.testing.assert_close(got, expected)
    # the wrapper hands exactly this matrix to the base loss
    wrapped = SymmetricalSynthesis(base, alpha=alpha, beta=beta)
    torch.testing.assert_close(wrapped.synthesized_matrix(x, y), expected)


def test_synthesis_only_makes_negatives_harder_and_keeps_positives() -> None:
    x, y = _batch([0, 1, 2, 3, 0, 1, 2, 3], dim=6, seed=6)
    base = SmoothEuclideanLoss()
    real = base.pair_matrix(x)
    synth = SymmetricalSynthesis(base).synthesized_matrix(x, y)
    neg = y.view(-1, 1) != y.view(1, -1)
    assert torch.equal(synth[~neg], real[~neg])
    assert bool((synth[neg] <= real[neg] + 1e-12).all())
    assert bool((synth[neg] < real[neg] - 1e-6).any())  # some synthetic point is harder
    # K = 2: both columns of a class see the same pair, hence the same four candidates
    for k, l in [(0, 4), (1, 5), (2, 6), (3, 7)]:
        rows = (y != y[k]).nonzero().flatten()
        torch.testing.assert_close(synth[rows, k], synth[rows, l])


# ---------------------------------------------------------------- gradients and the switch


@pytest.mark.parametrize("loss_cls", [SmoothEuclideanLoss, SmoothCosineLoss])
def test_gradcheck_through_wrapper(loss_cls: type[PairLoss]) -> None:
    x, y = _batch([0, 1, 2, 0, 1, 2, 0], dim=3, seed=7)
    wrapped = SymmetricalSynthesis(loss_cls())
    # keep away from ties of the element-wise min/max (non-differentiable points)
    base = wrapped.base_loss
    partner = next_in_class(y)
    first, second = synthesize_pairs(x, partner, 2.0, 1.0)
    stack = torch.stack(
        [
            base.pair_matrix(x),
            base.pair_matrix(x)[:, partner],
            base.pair_matrix(x, first),
            base.pair_matrix(x, second),
        ]
    )
    top2 = stack.sort(dim=0).values
    neg = y.view(-1, 1) != y.view(1, -1)
    gap = (top2[-1] - top2[-2]) if base.higher_is_closer else (top2[1] - top2[0])
    assert gap[neg].min() > 1e-4, "test input sits on a tie of the hardest-of-four selection"
    assert torch.autograd.gradcheck(
        lambda e: wrapped(e, y), (x.clone().requires_grad_(True),), eps=1e-6, atol=1e-5
    )


def test_gradient_flows_through_synthetic_points(monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = _batch([0, 1, 2, 3, 0, 1, 2, 3], dim=6, seed=6)  # a batch where synthesis bites
    wrapped = SymmetricalSynthesis(SmoothEuclideanLoss())
    real = wrapped.base_loss.pair_matrix(x)
    assert bool((wrapped.synthesized_matrix(x, y) < real - 1e-6).any())
    xa = x.clone().requires_grad_(True)
    wrapped(xa, y).backward()
    # the same loss with the synthetic points detached gives a different gradient
    original = fs.synthesize_pairs
    monkeypatch.setattr(
        fs, "synthesize_pairs", lambda e, p, a, b: tuple(t.detach() for t in original(e, p, a, b))
    )
    xb = x.clone().requires_grad_(True)
    wrapped(xb, y).backward()
    assert xa.grad is not None and xb.grad is not None
    assert not torch.allclose(xa.grad, xb.grad)


@pytest.mark.parametrize("loss_cls", [SmoothEuclideanLoss, SmoothCosineLoss])
def test_disabled_equals_base_loss_exactly(loss_cls: type[PairLoss]) -> None:
    x, y = _batch([0, 1, 2, 0, 1, 2], dim=4, seed=9)
    base = loss_cls()
    xa = x.clone().requires_grad_(True)
    xb = x.clone().requires_grad_(True)
    off = SymmetricalSynthesis(base, enabled=False)(xa, y)
    ref = base(xb, y)
    assert torch.equal(off, ref)
    off.backward()
    ref.backward()
    assert torch.equal(xa.grad, xb.grad)
    # and enabled differs (the synthetic negatives are harder)
    assert SymmetricalSynthesis(base)(x, y) > ref


def test_edge_cases_finite() -> None:
    base = SmoothEuclideanLoss()
    wrapped = SymmetricalSynthesis(base)
    for labels in ([0, 0, 0, 0], [0, 1, 2, 3]):  # one class; no positive pair
        x, y = _batch(labels, dim=3, seed=10)
        x = x.requires_grad_(True)
        loss = wrapped(x, y)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(x.grad).all()
    dup = torch.ones(4, 3, dtype=DT, requires_grad=True)  # duplicate embeddings
    loss = wrapped(dup, torch.tensor([0, 1, 0, 1]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(dup.grad).all()


# ---------------------------------------------------------------- configuration


def test_non_pair_loss_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not a pair-based loss"):
        SymmetricalSynthesis(NotAPairLoss())
    with pytest.raises(ConfigError, match="not a pair-based loss"):
        SymmetricalSynthesis(SymmetricalSynthesis(SmoothEuclideanLoss()))


class PairLossWithExtraTerm(SmoothEuclideanLoss):
    """A pair loss whose compute adds a term that matrix_loss does not see."""

    def compute(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        return super().compute(embeddings, labels) + embeddings.pow(2).sum()


def test_pair_loss_with_own_compute_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="silently drop"):
        SymmetricalSynthesis(PairLossWithExtraTerm())
    osm = build_loss("osm_caa", num_classes=3, embedding_dim=4)
    with pytest.raises(ConfigError, match="silently drop"):
        SymmetricalSynthesis(osm)


def test_proxy_anchor_is_a_config_error() -> None:
    loss = build_loss("proxy_anchor", num_classes=3, embedding_dim=4)
    with pytest.raises(ConfigError, match="not a pair-based loss"):
        SymmetricalSynthesis(loss)


@pytest.mark.parametrize("bad", [{"alpha": 0.0}, {"beta": -1.0}, {"alpha": float("nan")}])
def test_bad_knobs_are_config_errors(bad: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        SymmetricalSynthesis(SmoothEuclideanLoss(), **bad)


# ---------------------------------------------------------------- the five base losses

BASE_LOSSES = [
    ("contrastive", {}),
    ("triplet", {}),
    ("triplet", {"mining": "semihard"}),
    ("lifted_structure", {}),
    ("npair", {}),
    ("npair", {"pairs": "one_per_class"}),
    ("angular", {}),
]


@pytest.mark.parametrize("name,params", BASE_LOSSES, ids=lambda v: str(v))
def test_wraps_base_loss(name: str, params: dict[str, object]) -> None:
    base = build_loss(name, **params)
    wrapped = SymmetricalSynthesis(base)
    g = torch.Generator().manual_seed(11)
    y = torch.arange(4).repeat_interleave(3)[torch.randperm(12, generator=g)]
    x = F.normalize(torch.randn(12, 8, generator=g, dtype=DT), dim=1).requires_grad_(True)
    loss = wrapped(x, y)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0
    # the wrapper is exactly the base loss on the explicitly synthesised matrix (+ regulariser)
    with torch.no_grad():
        explicit = _explicit_matrix(x.detach(), y.tolist(), base.metric, 2.0, 1.0)
        pos_mask, neg_mask = label_masks(y)
        expected = base.matrix_loss(explicit, pos_mask, neg_mask) + base.regularizer(x)
        torch.testing.assert_close(wrapped(x, y), expected)
