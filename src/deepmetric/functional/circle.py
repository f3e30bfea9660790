r"""Circle loss as a pure function of a cosine-similarity matrix and label masks.

Sun, Cheng, Zhang, Zhang, Zheng, Wang, Wei, "Circle Loss: A Unified Perspective of Pair
Similarity Optimization", CVPR 2020 (arXiv 2002.10857), Eq. 6 with the paper's settings
(Eq. 8): :math:`O_p = 1 + m`, :math:`O_n = -m`, :math:`\Delta_p = 1 - m`, :math:`\Delta_n = m`.

For anchor (row) :math:`i` with positives :math:`P_i` and negatives :math:`N_i`, on cosine
similarities :math:`s`:

.. math::

    L_i = \operatorname{softplus}\Big(
        \log \sum_{j \in N_i} e^{\gamma \alpha_{ij}^n (s_{ij} - \Delta_n)}
      + \log \sum_{j \in P_i} e^{-\gamma \alpha_{ij}^p (s_{ij} - \Delta_p)} \Big),
    \qquad
    \alpha_{ij}^p = [O_p - s_{ij}]_+, \quad \alpha_{ij}^n = [s_{ij} - O_n]_+,

where the weights :math:`\alpha` are constants (detached, as in the paper: they are
"non-negative weighting factors", not part of the gradient path). :math:`\operatorname{softplus}
(a + b) = \log(1 + \sum_{N_i} \sum_{P_i} e^{\dots})` is the paper's Eq. 6.

**Reduction.** :math:`L` is the mean of :math:`L_i` over the anchors that have at least one
positive AND at least one negative; the others are excluded (their terms are undefined). A batch
without such an anchor gives 0, connected to the graph (zero gradient, never NaN).
PML's ``CircleLoss`` averages over anchors with a NON-ZERO loss (``AvgNonZeroReducer``); the
two coincide unless some valid anchor's :math:`L_i` underflows to exactly 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from deepmetric.functional.validation import check_pair_inputs


def masked_logsumexp(x: Tensor, mask: Tensor, dim: int = 1) -> Tensor:
    r""":math:`\log \sum_{j : mask_j} e^{x_j}` along ``dim``; a row with no selected entry gives 0
    with a zero gradient (the caller excludes such rows). Unselected entries never reach the
    value or the gradient, whatever they hold."""
    has = mask.any(dim=dim, keepdim=True)
    z = x.masked_fill(~mask, float("-inf")).masked_fill(~has, 0.0)
    return torch.logsumexp(z, dim=dim).masked_fill(~has.squeeze(dim), 0.0)


def circle_weights(sim: Tensor, m: float = 0.25) -> tuple[Tensor, Tensor]:
    r"""The constant pair weights :math:`(\alpha^p, \alpha^n) = ([1 + m - s]_+, [s + m]_+)` of
    the detached similarities."""
    s = sim.detach()
    return (1.0 + m - s).clamp_min(0.0), (s + m).clamp_min(0.0)


def circle_anchor_losses(
    sim: Tensor,
    pos_mask: Tensor,
    neg_mask: Tensor,
    m: float = 0.25,
    gamma: float = 256.0,
    weights: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    r"""Per-anchor :math:`L_i` (module docstring) and the boolean mask of anchors having both a
    positive and a negative (``L_i`` is 0 for the others).

    ``weights``: the constants :math:`(\alpha^p, \alpha^n)`, N x M each; default
    :func:`circle_weights` of ``sim`` (pass them explicitly to hold them fixed, e.g. to check
    the gradient numerically: the gradient treats them as constants)."""
    check_pair_inputs(sim, pos_mask, neg_mask, name="sim")
    alpha_p, alpha_n = circle_weights(sim, m) if weights is None else weights
    logit_p = (sim - (1.0 - m)) * alpha_p * -gamma
    logit_n = (sim - m) * alpha_n * gamma
    valid = pos_mask.any(dim=1) & neg_mask.any(dim=1)
    both = masked_logsumexp(logit_p, pos_mask) + masked_logsumexp(logit_n, neg_mask)
    return torch.where(valid, F.softplus(both), torch.zeros_like(both)), valid


def circle_loss(
    sim: Tensor,
    pos_mask: Tensor,
    neg_mask: Tensor,
    m: float = 0.25,
    gamma: float = 256.0,
    weights: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    r"""Circle loss of an N x M cosine-similarity matrix (see the module docstring).

    Args:
        sim: N x M cosine similarities (rows are anchors).
        pos_mask, neg_mask: boolean N x M masks (e.g. from
            :func:`~deepmetric.functional.masks.label_masks`).
        m: relaxation margin (paper: 0.25 for face recognition, 0.4 for fine-grained retrieval).
        gamma: scale :math:`\gamma` (paper: 256 face, 80 fine-grained).
        weights: optional constant :math:`(\alpha^p, \alpha^n)` (see :func:`circle_anchor_losses`).

    Returns:
        The mean of :math:`L_i` over anchors with at least one positive and one negative; 0 if
        there is none.
    """
    losses, valid = circle_anchor_losses(sim, pos_mask, neg_mask, m, gamma, weights)
    count = valid.sum().to(losses.dtype)
    return losses.sum() / torch.where(count > 0, count, torch.ones_like(count))


__all__ = ["circle_anchor_losses", "circle_loss", "circle_weights", "masked_logsumexp"]
