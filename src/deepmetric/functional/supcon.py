r"""Supervised contrastive (SupCon) and NT-Xent (SimCLR) losses as pure functions of a
cosine-similarity matrix.

**SupCon** -- Khosla, Teterwak, Wang, Sarna, Tian, Isola, Maschinot, Liu, Krishnan,
"Supervised Contrastive Learning", NeurIPS 2020 (arXiv 2004.11362), the paper's
:math:`\mathcal L^{sup}_{out}` (Eq. 2: the mean over positives OUTSIDE the log, the variant the
paper finds best). With :math:`z_{ij} = s_{ij} / \tau`, positives :math:`P_i` and every other
sample :math:`A_i = P_i \cup N_i` (the anchor itself excluded):

.. math::

    L_i = -\frac{1}{|P_i|} \sum_{p \in P_i}
        \log \frac{e^{z_{ip}}}{\sum_{a \in A_i} e^{z_{ia}}}
        = \log \sum_{a \in A_i} e^{z_{ia}} - \frac{1}{|P_i|} \sum_{p \in P_i} z_{ip},
    \qquad L = \frac{1}{|\{i : P_i \ne \emptyset\}|} \sum_{i : P_i \ne \emptyset} L_i .

Anchors without positives are excluded (their :math:`L_i` is undefined); a batch with none gives
0, connected to the graph. The paper writes a sum over anchors; its reference code (and PML)
average, as here. PML's ``SupConLoss`` averages over NON-ZERO anchor losses and returns 0 for a
batch without any negative pair: the values coincide whenever every anchor with positives has
a non-zero loss and the batch has at least one negative pair.

**NT-Xent** -- Chen, Kornblith, Norouzi, Hinton, "A Simple Framework for Contrastive Learning
of Visual Representations" (SimCLR), ICML 2020 (arXiv 2002.05709). No labels: the batch is
:math:`2N` rows in the **two-view layout** -- view a of item :math:`i` at row :math:`i`, view b at
row :math:`N + i` (:func:`deepmetric.data.two_view.collate_two_views` builds it). With
:math:`j(i) = (i + N) \bmod 2N` the other view of row :math:`i`:

.. math::

    L = \frac{1}{2N} \sum_{i=1}^{2N} -\log
        \frac{e^{s_{i j(i)} / \tau}}{\sum_{k \ne i} e^{s_{ik} / \tau}} .

Every other row is a negative, including other items of the same class (SimCLR is
self-supervised). It equals PML's ``NTXentLoss`` called with labels that are ITEM ids in this
layout (``[0..N-1, 0..N-1]``); with class labels PML treats same-class rows as further
positives, a different loss.
"""

from __future__ import annotations

import torch
from torch import Tensor

from deepmetric.errors import InputError
from deepmetric.functional.circle import masked_logsumexp
from deepmetric.functional.validation import check_pair_inputs

#: the NT-Xent batch layout, named in every layout error
TWO_VIEW_LAYOUT = (
    "the two-view layout: 2N rows, view a of item i at row i and view b at row N+i "
    "(build batches with deepmetric.data.two_view.collate_two_views)"
)


def supcon_anchor_losses(
    sim: Tensor, pos_mask: Tensor, neg_mask: Tensor, temperature: float = 0.1
) -> tuple[Tensor, Tensor]:
    r"""Per-anchor :math:`L_i` of SupCon (module docstring) and the mask of anchors with a
    positive (``L_i`` is 0 for the others)."""
    check_pair_inputs(sim, pos_mask, neg_mask, name="sim")
    logits = sim / temperature
    log_denominator = masked_logsumexp(logits, pos_mask | neg_mask)
    pos_count = pos_mask.sum(dim=1)
    has_pos = pos_count > 0
    pos_sum = torch.where(pos_mask, logits, torch.zeros_like(logits)).sum(dim=1)
    mean_pos = pos_sum / pos_count.clamp_min(1).to(logits.dtype)
    losses = torch.where(has_pos, log_denominator - mean_pos, torch.zeros_like(mean_pos))
    return losses, has_pos


def supcon_loss(sim: Tensor, pos_mask: Tensor, neg_mask: Tensor, temperature: float = 0.1) -> Tensor:
    r"""SupCon :math:`\mathcal L^{sup}_{out}` of an N x M cosine-similarity matrix.

    Args:
        sim: N x M cosine similarities (rows are anchors; for the batch against itself the
            diagonal must be in neither mask, as :func:`~deepmetric.functional.masks.label_masks`
            makes it).
        pos_mask, neg_mask: boolean N x M masks; the softmax denominator runs over
            ``pos_mask | neg_mask``.
        temperature: :math:`\tau` (paper: 0.1).

    Returns:
        The mean of :math:`L_i` over anchors with at least one positive; 0 if none.
    """
    losses, has_pos = supcon_anchor_losses(sim, pos_mask, neg_mask, temperature)
    count = has_pos.sum().to(losses.dtype)
    return losses.sum() / torch.where(count > 0, count, torch.ones_like(count))


def check_two_view_layout(num_rows: int, labels: Tensor | None = None) -> None:
    """Raise a one-line :class:`InputError` unless a batch of ``num_rows`` rows can be in the
    two-view layout (an even count) and, when ``labels`` are given, ``labels[i] == labels[N + i]``
    for every item ``i`` (both views of an item carry its label)."""
    if num_rows % 2:
        raise InputError(f"ntxent needs {TWO_VIEW_LAYOUT}; got an odd batch of {num_rows} rows")
    if labels is None or labels.numel() == 0:
        return
    half = num_rows // 2
    differ = labels[:half] != labels[half:]
    if bool(differ.any()):
        i = int(differ.nonzero()[0, 0])
        raise InputError(
            f"ntxent needs {TWO_VIEW_LAYOUT}, so labels[i] == labels[N+i]; with N={half} row {i} "
            f"has label {int(labels[i])} but row {half + i} has {int(labels[half + i])}"
        )


def ntxent_loss(sim: Tensor, temperature: float = 0.5) -> Tensor:
    r"""NT-Xent of the 2N x 2N cosine-similarity matrix of a two-view batch (module docstring).

    Args:
        sim: 2N x 2N similarities of the batch against itself, rows in the two-view layout.
        temperature: :math:`\tau` (SimCLR: 0.5 is its default for CIFAR-10 / batch 256-512).

    Returns:
        The mean over the 2N rows; an empty batch gives 0. A non-square or odd-sized matrix is a
        one-line :class:`~deepmetric.errors.InputError` naming the layout.
    """
    if sim.dim() != 2 or sim.shape[0] != sim.shape[1] or not sim.is_floating_point():
        raise InputError(
            f"ntxent needs the square 2N x 2N float similarity matrix of {TWO_VIEW_LAYOUT}; got "
            f"shape {tuple(sim.shape)} and dtype {sim.dtype}"
        )
    n2 = sim.shape[0]
    check_two_view_layout(n2)
    if n2 == 0:
        return sim.sum() * 0.0
    half = n2 // 2
    logits = sim / temperature
    eye = torch.eye(n2, dtype=torch.bool, device=sim.device)
    log_denominator = torch.logsumexp(logits.masked_fill(eye, float("-inf")), dim=1)
    # the other view of row i: column i + N for i < N (diagonal +N), i - N for i >= N (diagonal -N)
    positives = torch.cat([logits.diagonal(half), logits.diagonal(-half)])
    return (log_denominator - positives).mean()


__all__ = [
    "TWO_VIEW_LAYOUT",
    "check_two_view_layout",
    "ntxent_loss",
    "supcon_anchor_losses",
    "supcon_loss",
]
