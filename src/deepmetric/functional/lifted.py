r"""Lifted structured loss, smooth form (Song, Xiang, Jegelka, Savarese, "Deep Metric Learning
via Lifted Structured Feature Embedding", CVPR 2016, arXiv 1511.06452), in O(N^2).

For every positive pair (i, j), with :math:`N_i` the negatives of i:

.. math::

    J_{ij} = \log\Big(\sum_{k \in N_i} e^{\alpha - d_{ik}} + \sum_{l \in N_j} e^{\alpha - d_{jl}}\Big)
             + d_{ij},
    \qquad
    L = \frac{1}{2|P|} \sum_{(i,j) \in P} [J_{ij}]_+^2 .

Each row's :math:`\log\sum_{k \in N_i} e^{\alpha - d_{ik}}` is one masked log-sum-exp (no
overflow), and the two rows of a pair are combined with ``logaddexp``: one N x N pass, so a
batch of 512 takes milliseconds.

**Gradient**, written out (one N x N tensor is stored, nothing is taped): with
:math:`A_{ij} = [J_{ij}]_+ / |P|` on valid pairs, :math:`\ell_i` the row log-sum-exp,
:math:`\sigma_{ij} = e^{\ell_i - \mathrm{logaddexp}(\ell_i, \ell_j)}` and
:math:`q_{ik} = e^{\alpha - d_{ik} - \ell_i}` (the softmax over row i's negatives),

.. math::

    \frac{\partial L}{\partial d_{ik}} = A_{ik}
      - [k \in N_i]\, q_{ik} \sum_j \big(A_{ij} \sigma_{ij} + A_{ji} \sigma_{ji}\big).
"""

from __future__ import annotations

import torch
from torch import Tensor

from deepmetric.functional.closed_form import ClosedFormGradient
from deepmetric.functional.validation import check_pair_inputs
from deepmetric.functional.npair import masked_logsumexp


def lifted_structure_loss(dist: Tensor, pos_mask: Tensor, neg_mask: Tensor, margin: float = 1.0) -> Tensor:
    r"""Smooth lifted structured loss of a square N x N distance matrix.

    Args:
        dist: N x N Euclidean distances of a set against itself (the batch, or e.g. the union of
            batch features and class centers). Square, because the negatives of *both* members
            of a pair are read from their rows.
        pos_mask, neg_mask: boolean N x N masks; (i, j) is a positive pair where ``pos_mask`` is
            True, :math:`N_i` = the True entries of row i of ``neg_mask``.
        margin: :math:`\alpha`.

    Every True entry of ``pos_mask`` is one ordered pair; :math:`J_{ij} = J_{ji}`, so for the
    symmetric masks of a batch the mean over ordered entries is the mean over unordered pairs and
    the result equals the paper's :math:`\frac{1}{2|P|} \sum [J]_+^2`. A pair neither of whose
    members has a negative has :math:`J = -\infty` and contributes 0 (it still counts in
    :math:`|P|`); without any positive pair the loss is 0, connected to the graph.
    """
    check_pair_inputs(dist, pos_mask, neg_mask, square=True, name="dist")
    value, grad = _lifted_closed_form(dist.detach(), pos_mask, neg_mask, margin)
    return ClosedFormGradient.apply(dist, value, grad)


def lifted_structure_loss_taped(dist: Tensor, pos_mask: Tensor, neg_mask: Tensor, margin: float = 1.0) -> Tensor:
    """:func:`lifted_structure_loss` taped op by op by autograd (slower; twice differentiable)."""
    check_pair_inputs(dist, pos_mask, neg_mask, square=True, name="dist")
    row_lse = masked_logsumexp(margin - dist, neg_mask, dim=1)  # -inf where no negative
    has_neg = neg_mask.any(dim=1)
    valid = pos_mask & (has_neg.unsqueeze(1) | has_neg.unsqueeze(0))
    zero = torch.zeros_like(dist)
    # logaddexp(x, -inf) = x with finite gradients; pairs with both -inf are computed on zeros
    # and dropped, so no -inf - (-inf) enters the graph
    lse_i = torch.where(valid, row_lse.unsqueeze(1).expand_as(dist), zero)
    lse_j = torch.where(valid, row_lse.unsqueeze(0).expand_as(dist), zero)
    j_ij = torch.logaddexp(lse_i, lse_j) + dist
    hinge_sq = torch.relu(j_ij).pow(2)
    total = torch.where(valid, hinge_sq, zero).sum()
    n_pos = pos_mask.sum().to(dist.dtype)
    return 0.5 * total / torch.where(n_pos > 0, n_pos, torch.ones_like(n_pos))


@torch.no_grad()
def _lifted_closed_form(dist: Tensor, pos_mask: Tensor, neg_mask: Tensor, margin: float) -> tuple[Tensor, Tensor]:
    """Value and d(loss)/d(dist) of :func:`lifted_structure_loss` (module docstring)."""
    logits = (margin - dist).masked_fill_(~neg_mask, float("-inf"))
    row_max = logits.amax(dim=1, keepdim=True)
    has_neg = neg_mask.any(dim=1)
    row_max = torch.where(has_neg.unsqueeze(1), row_max, torch.zeros_like(row_max))
    q = logits.sub_(row_max).exp_()  # 0 off the negatives
    row_sum = q.sum(dim=1, keepdim=True)
    q.div_(torch.where(has_neg.unsqueeze(1), row_sum, torch.ones_like(row_sum)))
    row_lse = row_sum.log_().add_(row_max).squeeze(1)  # -inf where no negative
    lse_i, lse_j = row_lse.unsqueeze(1), row_lse.unsqueeze(0)
    valid = pos_mask & (has_neg.unsqueeze(1) | has_neg.unsqueeze(0))
    # sigma_ij = d logaddexp(l_i, l_j) / d l_i = sigmoid(l_i - l_j); NaN (both -inf) is masked
    sigma = torch.sigmoid(lse_i - lse_j)
    hinge = torch.logaddexp(lse_i, lse_j).add_(dist).clamp_min_(0.0).mul_(valid)
    n_pos = pos_mask.sum().to(dist.dtype)
    n_pos = torch.where(n_pos > 0, n_pos, torch.ones_like(n_pos))
    value = 0.5 * hinge.square().sum() / n_pos
    a = hinge.div_(n_pos)  # A_ij (0 off valid pairs)
    a_sigma = (a * sigma).nan_to_num_(0.0)  # A_ij sigma_ij; A_ji sigma_ji = A_ji - A_ji sigma_ij^T
    through_rows = a_sigma.sum(dim=1) + (a - a_sigma).sum(dim=0)
    grad = a.sub_(q.mul_(through_rows.unsqueeze(1)))
    return value, grad
