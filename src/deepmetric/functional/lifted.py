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
"""

from __future__ import annotations

import torch
from torch import Tensor

from deepmetric.functional.contrastive import check_pair_inputs
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
