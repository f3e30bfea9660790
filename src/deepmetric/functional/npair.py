r"""Multi-class N-pair loss (Sohn, "Improved Deep Metric Learning with Multi-class N-pair Loss
Objective", NeurIPS 2016) as a pure function of a similarity matrix and label masks.

.. math::

    L = \frac{1}{|P|} \sum_{(a,p) \in P} \log\Big(1 + \sum_{n \in N_a} \exp(s_{an} - s_{ap})\Big)

with :math:`s` the (dot-product) similarity. **Generalisation to P x K batches.** The paper
uses N pairs (one anchor and one positive per class) and, as negatives of an anchor, the
positives of the other classes. Here every ordered positive pair (a, p) of the mask is an
anchor-positive pair, and its negatives :math:`N_a` are *all* samples whose label differs from
the anchor's (every True entry of row a of ``neg_mask``). For a batch of N/2 classes x 2 this is
the paper's loss with twice as many negatives and both members of a pair taking the anchor role.

Also holds :func:`masked_logsumexp`, the NaN-free masked log-sum-exp the log-sum-exp losses
(N-pair, angular, lifted structure) share.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from deepmetric.functional.reductions import reduce_masked
from deepmetric.functional.validation import check_pair_inputs


def masked_logsumexp(x: Tensor, mask: Tensor, dim: int = -1) -> Tensor:
    r""":math:`\log \sum_{j: mask_j} \exp(x_j)` along ``dim``; ``-inf`` (with a zero, finite
    gradient) where the mask selects nothing."""
    has_any = mask.any(dim=dim, keepdim=True)
    neg_inf = torch.full_like(x, float("-inf"))
    # rows with nothing selected are computed on zeros, then replaced by -inf: no inf - inf
    safe = torch.where(mask, x, torch.where(has_any, neg_inf, torch.zeros_like(x)))
    lse = torch.logsumexp(safe, dim=dim, keepdim=True)
    return torch.where(has_any, lse, torch.full_like(lse, float("-inf"))).squeeze(dim)


def npair_loss(sim: Tensor, pos_mask: Tensor, neg_mask: Tensor) -> Tensor:
    r"""Mean over the True entries (a, p) of ``pos_mask`` of
    :math:`\log(1 + \sum_{n \in N_a} \exp(s_{an} - s_{ap}))`.

    ``sim`` is an N x M similarity matrix (row a = anchor; M may differ from N), the masks are
    boolean N x M. A pair whose anchor has no negative contributes :math:`\log 1 = 0`; without
    any positive pair the loss is 0, connected to the graph.
    """
    check_pair_inputs(sim, pos_mask, neg_mask, name="sim")
    lse_neg = masked_logsumexp(sim, neg_mask, dim=1)  # log sum_n exp(s_an), -inf if no negative
    # log(1 + sum_n exp(s_an - s_ap)) = softplus(lse_n(s_an) - s_ap)
    losses = F.softplus(lse_neg.unsqueeze(1) - sim)
    return reduce_masked(losses, pos_mask, "mean")


def l2_penalty(embeddings: Tensor, weight: float) -> Tensor:
    r"""``weight`` times the mean squared L2 norm of the embeddings,
    :math:`\lambda \frac{1}{N} \sum_i \|f_i\|_2^2` (Sohn's regulariser on the embedding vectors)."""
    return weight * embeddings.pow(2).sum(dim=1).mean()
