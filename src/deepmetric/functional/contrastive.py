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

The helpers the pair losses share live in :mod:`~deepmetric.functional.validation` (input
checks), :mod:`~deepmetric.functional.reductions` (masked reductions) and
:mod:`~deepmetric.functional.closed_form` (hand-written backward passes).
"""

from __future__ import annotations

import torch
from torch import Tensor

from deepmetric.functional.closed_form import ClosedFormGradient
from deepmetric.functional.reductions import check_reduction, reduce_masked
from deepmetric.functional.validation import check_pair_inputs

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
