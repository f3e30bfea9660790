r"""Multi-similarity loss and its pair mining, as pure functions of a similarity matrix.

Wang, Han, Huang, Dong, Scott, "Multi-Similarity Loss with General Pair Weighting for Deep
Metric Learning", CVPR 2019 (arXiv 1904.06627).

For an anchor :math:`i` with positive set :math:`P_i` and negative set :math:`N_i` (after
mining), on cosine similarities :math:`S`:

.. math::

    L_i = \frac{1}{\alpha} \log\Big(1 + \sum_{j \in P_i} e^{-\alpha (S_{ij} - \lambda)}\Big)
        + \frac{1}{\beta}  \log\Big(1 + \sum_{k \in N_i} e^{\beta (S_{ik} - \lambda)}\Big),
    \qquad L = \frac{1}{N} \sum_{i=1}^{N} L_i .

Pair mining (the paper's Sec. 3.3), computed on the detached matrix:

* a negative is kept when :math:`S_{ik} + \epsilon > \min_{y_j = y_i} S_{ij}`,
* a positive is kept when :math:`S_{ij} - \epsilon < \max_{y_k \ne y_i} S_{ik}`.

The gradient is written out rather than taped op by op (it is the speed-critical part):

.. math::

    \frac{\partial L}{\partial S_{ij}} = \frac{1}{N}\Big(
        \frac{e^{\beta (S_{ij} - \lambda)}}{1 + \sum_{k \in N_i} e^{\beta (S_{ik} - \lambda)}}[j \in N_i]
      - \frac{e^{-\alpha (S_{ij} - \lambda)}}{1 + \sum_{k \in P_i} e^{-\alpha (S_{ik} - \lambda)}}[j \in P_i]
    \Big),

the pair weights of the paper's Eq. 7-8. The forward pass stores that one N x M matrix; the
backward pass is a single multiply. For second derivatives (``create_graph=True``) pass
``double_backward=True``: the same loss, taped op by op (slower).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx

from deepmetric.errors import ConfigError


def masked_log1p_sum_exp(x: Tensor, mask: Tensor, dim: int) -> Tensor:
    r""":math:`\log(1 + \sum_{j : mask_j} e^{x_j})` along ``dim``, computed stably.

    Equal to ``logsumexp`` over the masked entries plus one extra zero logit: the running
    maximum is clamped at 0, so neither large nor very negative logits overflow. An empty
    mask gives exactly 0 with a zero (not NaN) gradient. Masked-out entries may hold any
    finite or infinite value; they never reach the result or the gradient.
    """
    z = x.masked_fill(~mask, float("-inf"))
    shift = z.amax(dim=dim, keepdim=True).clamp_min(0.0).detach()
    total = torch.exp(z - shift).sum(dim=dim, keepdim=True) + torch.exp(-shift)
    return (shift + torch.log(total)).squeeze(dim)


def _log1p_sum_exp_and_weights(x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Row-wise ``log(1 + sum_mask exp(x))`` and its gradient ``exp(x) / (1 + sum)`` (0 off mask).

    Overwrites ``x`` (a temporary of the caller)."""
    z = x.masked_fill_(~mask, float("-inf"))
    shift = z.amax(dim=1, keepdim=True).clamp_min_(0.0)
    e = z.sub_(shift).exp_()
    total = e.sum(dim=1, keepdim=True).add_(torch.exp(-shift))
    value = shift.add_(torch.log(total)).squeeze(1)
    return value, e.div_(total)


class _MultiSimilarity(torch.autograd.Function):
    """The loss on already-mined masks, with the closed-form gradient of the module docstring."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: FunctionCtx,
        sim: Tensor,
        pos_mask: Tensor,
        neg_mask: Tensor,
        alpha: float,
        beta: float,
        base: float,
    ) -> Tensor:
        shifted = sim - base
        pos_value, pos_weight = _log1p_sum_exp_and_weights(shifted * -alpha, pos_mask)
        neg_value, neg_weight = _log1p_sum_exp_and_weights(shifted.mul_(beta), neg_mask)
        n = sim.shape[0]
        ctx.save_for_backward(neg_weight.sub_(pos_weight).div_(n))
        return (pos_value.div_(alpha).add_(neg_value, alpha=1.0 / beta)).sum() / n

    @staticmethod
    def backward(ctx: FunctionCtx, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        if torch.is_grad_enabled():  # backward(create_graph=True): a 2nd derivative is wanted
            raise ConfigError(
                "multi_similarity_loss's fast gradient has no second derivative; for "
                "create_graph=True call deepmetric.functional.multi_similarity."
                "multi_similarity_loss(..., double_backward=True)"
            )
        (weights,) = ctx.saved_tensors  # type: ignore[attr-defined]
        return weights * grad, None, None, None, None, None


@torch.no_grad()
def multi_similarity_mining(
    sim: Tensor, pos_mask: Tensor, neg_mask: Tensor, epsilon: float = 0.1
) -> tuple[Tensor, Tensor]:
    r"""The paper's hard-pair mining: return the kept ``(pos_mask, neg_mask)``.

    Per anchor (row) a negative is kept if :math:`S_{ik} + \epsilon` exceeds the anchor's
    least similar positive, and a positive is kept if :math:`S_{ij} - \epsilon` is below the
    anchor's most similar negative. An anchor with no positive keeps no negative and vice
    versa (the bound over an empty set is :math:`+\infty` / :math:`-\infty`). The masks are
    selections, computed without gradient.
    """
    min_pos = sim.masked_fill(~pos_mask, float("inf")).amin(dim=1, keepdim=True)
    max_neg = sim.masked_fill(~neg_mask, float("-inf")).amax(dim=1, keepdim=True)
    kept_neg = neg_mask & (sim + epsilon > min_pos)
    kept_pos = pos_mask & (sim - epsilon < max_neg)
    return kept_pos, kept_neg


def multi_similarity_loss(
    sim: Tensor,
    pos_mask: Tensor,
    neg_mask: Tensor,
    alpha: float = 2.0,
    beta: float = 50.0,
    base: float = 0.5,
    epsilon: float = 0.1,
    mining: bool = True,
    double_backward: bool = False,
) -> Tensor:
    r"""Multi-similarity loss of an N x M similarity matrix (see the module docstring).

    Args:
        sim: N x M similarities (cosine in the paper), anchors in rows.
        pos_mask, neg_mask: boolean N x M positive / negative pair masks.
        alpha: positive scale :math:`\alpha` (paper: 2).
        beta: negative scale :math:`\beta` (paper: 50).
        base: similarity margin :math:`\lambda` (paper: 0.5, written ``base`` as in
            the official code).
        epsilon: mining margin :math:`\epsilon` (paper: 0.1); used only if ``mining``.
        mining: apply :func:`multi_similarity_mining` before the loss.
        double_backward: tape every op (twice differentiable, slower) instead of using the
            closed-form gradient.

    Returns:
        The mean over all N anchors. An empty set (no kept positive or negative) makes its
        term :math:`\log 1 = 0`. Mining empties both sets of an anchor or neither (no kept
        negative means every negative is below :math:`\min P - \epsilon`, so no positive is
        below :math:`\max N + \epsilon`, and conversely), so an anchor lacking positives or
        negatives contributes 0, exactly like the official code, which skips such anchors
        but still divides by N.
        The value stays connected to the graph with a zero gradient.
    """
    if sim.shape[0] == 0 or sim.shape[1] == 0:
        return sim.sum() * 0.0
    if mining:
        pos_mask, neg_mask = multi_similarity_mining(sim, pos_mask, neg_mask, epsilon)
    if double_backward:
        pos_term = masked_log1p_sum_exp(-alpha * (sim - base), pos_mask, dim=1) / alpha
        neg_term = masked_log1p_sum_exp(beta * (sim - base), neg_mask, dim=1) / beta
        return (pos_term + neg_term).mean()
    return _MultiSimilarity.apply(sim, pos_mask, neg_mask, float(alpha), float(beta), float(base))
