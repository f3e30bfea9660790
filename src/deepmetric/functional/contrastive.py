r"""Contrastive loss (Hadsell, Chopra, LeCun, "Dimensionality Reduction by Learning an Invariant
Mapping", CVPR 2006) as a pure function of a distance matrix and label masks.

Per pair, with Euclidean distance :math:`d_{ij}`:

.. math::

    \ell^+_{ij} = [d_{ij} - m_+]_+^{p}, \qquad \ell^-_{ij} = [m_- - d_{ij}]_+^{p},

with :math:`p = 2` when ``squared`` else :math:`p = 1`. The paper's form is ``pos_margin=0``,
``squared=True`` (its factor 1/2 is a constant scale and left out). Optional per-pair weights
:math:`w^\pm_{ij}` turn it into a *weighted* contrastive loss (OSM+CAA reuses
:func:`weighted_contrastive`). The function returns the positive and the negative term
separately, so a caller can mix them (e.g. :math:`(1-\lambda) L_P + \lambda L_N`).

This module also holds the small helpers the other pair losses share: input checks and the
reduction of a masked matrix of per-pair (or per-triplet-group) losses.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx

from deepmetric.errors import ConfigError, InputError, unknown_name_message

#: reductions understood by :func:`reduce_masked`
REDUCTIONS: tuple[str, ...] = ("mean", "mean_active", "sum")


def check_reduction(reduction: str) -> None:
    """Raise :class:`ConfigError` unless ``reduction`` is one of :data:`REDUCTIONS`."""
    if reduction not in REDUCTIONS:
        raise ConfigError(unknown_name_message("reduction", reduction, REDUCTIONS))


class ClosedFormGradient(torch.autograd.Function):
    """A loss whose value and gradient w.r.t. its pair matrix were computed without taping.

    ``apply(matrix, value, grad)`` returns ``value`` (a scalar) connected to ``matrix``; the
    backward pass is the single product ``grad * upstream``. The pair losses use it so that one
    N x M gradient is stored instead of a long chain of taped N x M element-wise ops. It has no
    second derivative (``create_graph=True`` raises).
    """

    @staticmethod
    def forward(ctx: FunctionCtx, matrix: Tensor, value: Tensor, grad: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(grad)
        return value.to(matrix.dtype)

    @staticmethod
    def backward(ctx: FunctionCtx, upstream: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        if torch.is_grad_enabled():
            raise ConfigError(
                "this pair loss uses a closed-form gradient without a second derivative; "
                "backward(create_graph=True) is not supported for it"
            )
        (grad,) = ctx.saved_tensors  # type: ignore[attr-defined]
        return grad * upstream, None, None


class _EuclideanDistances(torch.autograd.Function):
    r"""Forward: :func:`deepmetric.functional.euclidean_distance_matrix` (same values). Backward,
    written out: with :math:`G` the upstream gradient and
    :math:`H = G / (2 d)` where :math:`d^2 > 10^{-16}` (else 0, as ``safe_sqrt``),
    :math:`\partial/\partial x = 2\,\mathrm{diag}(H 1) x - 2 H y` and
    :math:`\partial/\partial y = 2\,\mathrm{diag}(H^\top 1) y - 2 H^\top x`; for
    :math:`y = x` both are summed into ONE matrix product :math:`(H + H^\top) x`."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: Tensor, y: Tensor | None) -> Tensor:  # type: ignore[override]
        from deepmetric.functional.distances import euclidean_distance_matrix

        dist = euclidean_distance_matrix(x, y)
        ctx.save_for_backward(x, y if y is not None else x, dist)
        ctx.same = y is None
        return dist

    @staticmethod
    def backward(ctx: FunctionCtx, upstream: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        if torch.is_grad_enabled():
            raise ConfigError(
                "the closed-form Euclidean distance gradient has no second derivative; use "
                "deepmetric.functional.euclidean_distance_matrix for backward(create_graph=True)"
            )
        x, y, dist = ctx.saved_tensors  # type: ignore[attr-defined]
        # safe_sqrt gives d = 0 exactly where d^2 <= 1e-16 (and there a zero gradient)
        h = torch.where(dist > 0, upstream * 0.5 / dist, torch.zeros_like(dist))
        if ctx.same:  # type: ignore[attr-defined]
            h = h + h.T
            grad_x = x * h.sum(dim=1, keepdim=True).mul_(2.0) - (h @ x).mul_(2.0)
            return grad_x, None
        grad_x = x * h.sum(dim=1, keepdim=True).mul_(2.0) - (h @ y).mul_(2.0)
        grad_y = y * h.sum(dim=0).unsqueeze(1).mul_(2.0) - (h.T @ x).mul_(2.0)
        return grad_x, grad_y


def euclidean_distances_closed_form(x: Tensor, y: Tensor | None = None) -> Tensor:
    """:func:`deepmetric.functional.euclidean_distance_matrix` (identical values) with a
    hand-written backward pass: one matrix product instead of the two of the taped Gram matrix,
    and no taped element-wise chain. Once differentiable only."""
    return _EuclideanDistances.apply(x, y)


def check_pair_inputs(
    matrix: Tensor, pos_mask: Tensor, neg_mask: Tensor, square: bool = False, name: str = "matrix"
) -> None:
    """Raise :class:`InputError` unless ``matrix`` is a 2-D float tensor and both masks are
    boolean tensors of the same shape (and, with ``square``, the matrix is N x N)."""
    if matrix.dim() != 2 or not matrix.is_floating_point():
        raise InputError(
            f"{name} must be a 2-D float pair matrix, got shape {tuple(matrix.shape)} and dtype "
            f"{matrix.dtype}; build it with deepmetric.functional.pairwise_matrix"
        )
    for mask_name, mask in (("pos_mask", pos_mask), ("neg_mask", neg_mask)):
        if mask.shape != matrix.shape or mask.dtype != torch.bool:
            raise InputError(
                f"{mask_name} must be a boolean tensor of the {name}'s shape {tuple(matrix.shape)}, "
                f"got shape {tuple(mask.shape)} and dtype {mask.dtype}; "
                "build the masks with deepmetric.functional.label_masks"
            )
    if square and matrix.shape[0] != matrix.shape[1]:
        raise InputError(
            f"this loss needs a square N x N {name} of the batch against itself (it reads rows of "
            f"positives), got shape {tuple(matrix.shape)}; pass the self-comparison matrix"
        )


def reduce_masked(
    losses: Tensor,
    mask: Tensor,
    reduction: str = "mean",
    weight: Tensor | None = None,
    count: Tensor | None = None,
    active_count: Tensor | None = None,
) -> Tensor:
    r"""Reduce the entries of ``losses`` selected by ``mask`` to a scalar.

    * ``"mean"``: :math:`\sum w \ell / \sum w` over the selected entries (the plain mean when
      ``weight`` is ``None``);
    * ``"mean_active"``: the same, but the denominator only counts entries with :math:`\ell > 0`;
    * ``"sum"``: :math:`\sum w \ell`.

    ``count`` / ``active_count`` override the denominators (for entries that stand for several
    terms, e.g. one anchor-positive pair summing over its negatives). An empty denominator gives
    0 with a zero gradient that stays connected to the graph (never NaN).
    """
    check_reduction(reduction)
    w = mask.to(losses.dtype) if weight is None else weight.to(losses.dtype) * mask
    # ``where`` keeps unselected entries out of the sum even when they are not finite.
    total = torch.where(mask, losses * w, torch.zeros_like(losses)).sum()
    if reduction == "sum":
        return total
    if reduction == "mean":
        denom = w.sum() if count is None else count.to(losses.dtype)
    else:
        denom = (w * (losses > 0)).sum() if active_count is None else active_count.to(losses.dtype)
    # An empty denominator means every selected term is 0 (no entry, zero weight or no active
    # entry), so dividing by 1 instead returns that 0 without a host sync or a NaN.
    return total / torch.where(denom > 0, denom, torch.ones_like(denom))


def contrastive_pair_losses(
    dist: Tensor, pos_margin: float = 0.0, neg_margin: float = 1.0, squared: bool = False
) -> tuple[Tensor, Tensor]:
    r"""Element-wise :math:`([d - m_+]_+^p,\ [m_- - d]_+^p)` for every entry of ``dist``."""
    pos = torch.relu(dist - pos_margin)
    neg = torch.relu(neg_margin - dist)
    if squared:
        return pos * pos, neg * neg
    return pos, neg


def weighted_contrastive(
    dist: Tensor,
    pos_mask: Tensor,
    neg_mask: Tensor,
    pos_weight: Tensor | None = None,
    neg_weight: Tensor | None = None,
    pos_margin: float = 0.0,
    neg_margin: float = 1.0,
    squared: bool = False,
    reduction: str = "mean",
) -> tuple[Tensor, Tensor]:
    r"""Return the positive and negative terms :math:`(L_P, L_N)` of a (weighted) contrastive loss.

    .. math::

        L_P = \frac{\sum_{(i,j) \in P} w^+_{ij}\, [d_{ij} - m_+]_+^p}{\sum_{(i,j) \in P} w^+_{ij}},
        \qquad
        L_N = \frac{\sum_{(i,j) \in N} w^-_{ij}\, [m_- - d_{ij}]_+^p}{\sum_{(i,j) \in N} w^-_{ij}}

    for ``reduction="mean"`` (weights default to 1, giving the plain mean over all pairs of each
    kind); ``"mean_active"`` divides by the weight of pairs with a non-zero loss only; ``"sum"``
    does not divide. Args:

    * ``dist``: N x M Euclidean distances; ``pos_mask`` / ``neg_mask``: boolean N x M.
    * ``pos_weight`` / ``neg_weight``: optional N x M weights, used as given (detach them for
      constant weights as in OSM+CAA).
    * ``pos_margin`` :math:`m_+`, ``neg_margin`` :math:`m_-`, ``squared`` (:math:`p = 2`).

    Every True mask entry is one ordered pair (i, j). The masks of a batch against itself are
    symmetric, so each unordered pair appears twice: the means are exactly the means over
    unordered pairs, and ``"sum"`` on a square matrix is halved so that it is the sum over
    unordered pairs. A square matrix that is *not* symmetric (e.g. after symmetrical synthesis
    replaced negative entries) thus has both directions of a pair averaged.

    A kind with no pair (or no active pair for ``"mean_active"``, or zero total weight) gives 0,
    connected to the graph.
    """
    check_pair_inputs(dist, pos_mask, neg_mask, name="dist")
    check_reduction(reduction)
    pos_loss, neg_loss = contrastive_pair_losses(dist, pos_margin, neg_margin, squared)
    pos_term = reduce_masked(pos_loss, pos_mask, reduction, pos_weight)
    neg_term = reduce_masked(neg_loss, neg_mask, reduction, neg_weight)
    if reduction == "sum" and dist.shape[0] == dist.shape[1]:
        return 0.5 * pos_term, 0.5 * neg_term
    return pos_term, neg_term


def contrastive_loss(
    dist: Tensor,
    pos_mask: Tensor,
    neg_mask: Tensor,
    pos_margin: float = 0.0,
    neg_margin: float = 1.0,
    squared: bool = False,
    reduction: str = "mean",
    pos_weight: Tensor | None = None,
    neg_weight: Tensor | None = None,
) -> Tensor:
    r"""Contrastive loss :math:`L = L_P + L_N` (see :func:`weighted_contrastive` for each term).

    With the defaults this is the mean of :math:`d_{ij}` over positive pairs plus the mean of
    :math:`[1 - d_{ij}]_+` over negative pairs (each unordered pair counted once for a symmetric
    matrix).
    """
    if pos_weight is None and neg_weight is None:
        check_pair_inputs(dist, pos_mask, neg_mask, name="dist")
        check_reduction(reduction)
        value, grad = _contrastive_closed_form(
            dist.detach(), pos_mask, neg_mask, pos_margin, neg_margin, squared, reduction
        )
        return ClosedFormGradient.apply(dist, value, grad)
    pos_term, neg_term = weighted_contrastive(
        dist, pos_mask, neg_mask, pos_weight, neg_weight, pos_margin, neg_margin, squared, reduction
    )
    return pos_term + neg_term


@torch.no_grad()
def _contrastive_closed_form(
    dist: Tensor,
    pos_mask: Tensor,
    neg_mask: Tensor,
    pos_margin: float,
    neg_margin: float,
    squared: bool,
    reduction: str,
) -> tuple[Tensor, Tensor]:
    r"""Value and d(loss)/d(dist) of the unweighted :func:`contrastive_loss`, without taping:
    :math:`\partial L / \partial d = p\,[d - m_+]_+^{p-1} / D_P` on positive pairs and
    :math:`-p\,[m_- - d]_+^{p-1} / D_N` on negative pairs (:math:`D` the reduction's denominator)."""
    pos = (dist - pos_margin).clamp_min_(0.0).mul_(pos_mask)
    neg = (neg_margin - dist).clamp_min_(0.0).mul_(neg_mask)
    pos_active, neg_active = torch.sign(pos), torch.sign(neg)

    def denominator(mask: Tensor, active: Tensor) -> Tensor:
        if reduction == "sum":
            half = dist.shape[0] == dist.shape[1]
            return torch.full((), 2.0 if half else 1.0, dtype=dist.dtype, device=dist.device)
        count = (mask.sum() if reduction == "mean" else active.sum()).to(dist.dtype)
        return torch.where(count > 0, count, torch.ones_like(count))

    pos_denom, neg_denom = denominator(pos_mask, pos_active), denominator(neg_mask, neg_active)
    if squared:
        value = pos.square().sum() / pos_denom + neg.square().sum() / neg_denom
        grad = pos.mul_(2.0 / pos_denom).sub_(neg.mul_(2.0 / neg_denom))
    else:
        value = pos.sum() / pos_denom + neg.sum() / neg_denom
        grad = pos_active.div_(pos_denom).sub_(neg_active.div_(neg_denom))
    return value, grad
