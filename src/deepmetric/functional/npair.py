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

**The paper's construction** (:func:`npair_class_pairs_loss`): one anchor-positive pair per
class (the class's first and second sample in batch order), and as negatives of anchor
:math:`i` the positives :math:`f_j^+` of the other pairs:

.. math::

    L = \frac{1}{P} \sum_{i=1}^{P} \log\Big(1 + \sum_{j \ne i}
        \exp(f_i^\top f_j^+ - f_i^\top f_i^+)\Big)
      = \frac{1}{P} \sum_i \mathrm{CE}\big(\mathrm{softmax}_j(f_i^\top f_j^+),\ i\big).

Also holds :func:`masked_logsumexp`, the NaN-free masked log-sum-exp the log-sum-exp losses
(N-pair, angular, lifted structure) share.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from deepmetric.errors import InputError
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


def class_pair_indices(labels: Tensor) -> tuple[Tensor, Tensor]:
    """(anchor, positive) indices: the first and second sample of every class with two or more
    samples, in batch order, classes in ascending label order."""
    order = torch.argsort(labels, stable=True)
    _, counts = torch.unique_consecutive(labels[order], return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    starts = starts[counts >= 2]
    return order[starts], order[starts + 1]


def class_pairs_from_mask(pos_mask: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`class_pair_indices` read off a square same-label mask (diagonal False): an anchor
    is a row with a positive but none at a lower column; its positive is its first one."""
    n = pos_mask.shape[0]
    cols = torch.arange(pos_mask.shape[1], device=pos_mask.device)
    earlier = pos_mask & (cols.unsqueeze(0) < torch.arange(n, device=pos_mask.device).unsqueeze(1))
    anchors = torch.nonzero(pos_mask.any(dim=1) & ~earlier.any(dim=1)).flatten()
    positives = pos_mask[anchors].to(torch.uint8).argmax(dim=1)  # first True
    return anchors, positives


def npair_class_pairs_loss(sim_anchor_positive: Tensor) -> Tensor:
    r"""The paper's N-pair-mc loss from the P x P matrix :math:`s_{ij} = f_i^\top f_j^+`
    (row i = anchor of pair i, column j = positive of pair j): mean cross-entropy with target
    i on row i. No pair (P = 0) gives 0, connected to the graph; one pair gives 0."""
    if sim_anchor_positive.dim() != 2 or sim_anchor_positive.shape[0] != sim_anchor_positive.shape[1]:
        raise InputError(
            "npair_class_pairs_loss needs the square P x P anchor-by-positive similarity "
            f"matrix, got shape {tuple(sim_anchor_positive.shape)}"
        )
    n_pairs = sim_anchor_positive.shape[0]
    if n_pairs == 0:
        return sim_anchor_positive.sum()
    targets = torch.arange(n_pairs, device=sim_anchor_positive.device)
    return F.cross_entropy(sim_anchor_positive, targets)


def l2_penalty(embeddings: Tensor, weight: float) -> Tensor:
    r"""``weight`` times the mean squared L2 norm of the embeddings,
    :math:`\lambda \frac{1}{N} \sum_i \|f_i\|_2^2` (Sohn's regulariser on the embedding vectors)."""
    return weight * embeddings.pow(2).sum(dim=1).mean()
