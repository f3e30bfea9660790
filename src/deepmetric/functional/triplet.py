r"""Triplet margin loss with "all", "semi-hard" and "batch-hard" mining, in O(N^2) memory.

For an anchor a, a positive p (same label) and a negative n (different label), written with a
*dissimilarity* :math:`v` (the distance :math:`d`, or :math:`-s` for a similarity :math:`s`):

.. math::

    \ell_{apn} = [v_{ap} - v_{an} + m]_+ .

* ``"all"``: every valid triplet (Schroff, Kalenichenko, Philbin, "FaceNet", CVPR 2015,
  arXiv 1503.03832; the "batch all" of Hermans, Beyer, Leibe, "In Defense of the Triplet Loss for
  Person Re-Identification", arXiv 1703.07737, 2017).
* ``"semihard"`` (FaceNet): for every anchor-positive pair the negative is the *nearest negative
  farther than the positive*, :math:`n^* = \arg\min_{n: v_{an} > v_{ap}} v_{an}`; it is
  semi-hard (and costs something) when :math:`v_{an^*} < v_{ap} + m`, otherwise the pair already
  satisfies the margin and costs 0. **Fallback:** when every negative is at least as close as the
  positive (no negative with :math:`v_{an} > v_{ap}`), the farthest negative is used, i.e. the
  least violating one.
* ``"batch_hard"`` (Hermans et al.): one triplet per anchor, its hardest positive
  (:math:`\max_p v_{ap}`) and hardest negative (:math:`\min_n v_{an}`).

**Memory.** "all" never builds the N x P x N tensor of triplets. For anchor a, with its
negatives sorted, :math:`\sum_n [t - v_{an}]_+ = c\,t - \sum_{k<c} v_{a(k)}` where
:math:`t = v_{ap} + m` and :math:`c` = the number of negatives below :math:`t` (found by binary
search); the sum of the :math:`c` smallest is read from a prefix sum. Value and gradient are
exact; memory and time are O(N M log M) for an N x M matrix, whatever the class sizes.
"""

from __future__ import annotations

import torch
from torch import Tensor

from deepmetric.errors import ConfigError, unknown_name_message
from deepmetric.functional.closed_form import ClosedFormGradient
from deepmetric.functional.reductions import check_reduction, reduce_masked
from deepmetric.functional.validation import check_pair_inputs

#: "all" and "semihard" compare each anchor's few positives with its whole row (an N x P x M
#: comparison, P = most positives of an anchor) while P is at most this; beyond, they sort rows
MAX_POSITIVES_PER_ROW_COMPARED: int = 32
#: rows per chunk of the N x P x M comparison: chunk * P * M stays below this many entries
_CHUNK_ENTRIES: int = 1 << 22

#: mining strategies understood by :func:`triplet_loss`
MININGS: tuple[str, ...] = ("all", "semihard", "batch_hard")


def check_mining(mining: str) -> None:
    """Raise :class:`ConfigError` unless ``mining`` is one of :data:`MININGS`."""
    if mining not in MININGS:
        raise ConfigError(unknown_name_message("mining", mining, MININGS))


def _sorted_negatives(v: Tensor, neg_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Each row's negative dissimilarities sorted ascending (non-negatives as +inf at the end),
    and the number of negatives per row."""
    inf = torch.full_like(v, float("inf"))
    sorted_v, _ = torch.where(neg_mask, v, inf).sort(dim=1)
    return sorted_v, neg_mask.sum(dim=1)


def positive_columns(pos_mask: Tensor) -> tuple[Tensor, Tensor] | None:
    """Each row's positive columns as an N x P table (P = most positives of a row) and a mask of
    the real entries, or ``None`` when P exceeds :data:`MAX_POSITIVES_PER_ROW_COMPARED`."""
    n_pos = int(pos_mask.sum(dim=1).max()) if pos_mask.numel() else 0
    if n_pos > MAX_POSITIVES_PER_ROW_COMPARED:
        return None
    if n_pos == 0:
        empty = torch.zeros(pos_mask.shape[0], 0, dtype=torch.long, device=pos_mask.device)
        return empty, empty.bool()
    cols = pos_mask.to(torch.uint8).topk(n_pos, dim=1, sorted=False).indices
    return cols, pos_mask.gather(1, cols)


def _row_chunks(n: int, per_row: int) -> range:
    return range(0, n, max(1, _CHUNK_ENTRIES // max(per_row, 1)))


def _finish(matrix: Tensor, value: Tensor, grad_v: Tensor, higher_is_closer: bool) -> Tensor:
    """Attach the closed-form gradient w.r.t. ``v`` (= ``-matrix`` for similarities)."""
    return ClosedFormGradient.apply(matrix, value, grad_v.neg_() if higher_is_closer else grad_v)


def _denominator(total_count: Tensor, active_count: Tensor, reduction: str, dtype: torch.dtype) -> Tensor:
    if reduction == "sum":
        return torch.ones((), dtype=dtype, device=total_count.device)
    denom = (total_count if reduction == "mean" else active_count).to(dtype)
    return torch.where(denom > 0, denom, torch.ones_like(denom))


@torch.no_grad()
def _all_compared(
    v: Tensor, pos_mask: Tensor, neg_mask: Tensor, cols: Tensor, real: Tensor, margin: float, reduction: str
) -> tuple[Tensor, Tensor]:
    r"""Value and gradient (w.r.t. ``v``) of "all" from the N x P x M comparison of each anchor's
    thresholds :math:`t_{ap} = v_{ap} + m` with its row: triplet (a, p, n) is active when
    :math:`n \in N_a` and :math:`v_{an} < t_{ap}`; its loss is :math:`t_{ap} - v_{an}`, and it
    adds +1 to :math:`\partial/\partial v_{ap}` and -1 to :math:`\partial/\partial v_{an}`."""
    n, m = v.shape
    p = cols.shape[1]
    inf = float("inf")
    total = torch.zeros((), dtype=v.dtype, device=v.device)
    per_pos = torch.zeros(n, p, dtype=v.dtype, device=v.device)  # active triplets of (a, p)
    per_neg = torch.zeros(n, m, dtype=v.dtype, device=v.device)  # active triplets of (a, n)
    # non-negatives at +inf and padding positives at -inf drop out of the clamped hinge
    v_neg = v.masked_fill(~neg_mask, inf)
    thresholds = v.gather(1, cols).add_(margin).masked_fill_(~real, -inf)
    for lo in _row_chunks(n, p * m):
        hi = min(n, lo + max(1, _CHUNK_ENTRIES // max(p * m, 1)))
        hinge = (thresholds[lo:hi].unsqueeze(2) - v_neg[lo:hi].unsqueeze(1)).clamp_min_(0.0)
        active = torch.sign(hinge)  # 1 for an active triplet (t_ap - v_an > 0), else 0
        total += hinge.sum()
        per_pos[lo:hi] = active.sum(dim=2)
        per_neg[lo:hi] = active.sum(dim=1)
    n_active = per_pos.sum()
    n_all = (real.sum(dim=1) * neg_mask.sum(dim=1)).sum()
    denom = _denominator(n_all, n_active, reduction, v.dtype)
    grad = per_neg.neg_().scatter_add_(1, cols, per_pos).div_(denom)
    return total / denom, grad


@torch.no_grad()
def _semihard_compared(
    v: Tensor, pos_mask: Tensor, neg_mask: Tensor, cols: Tensor, real: Tensor, margin: float, reduction: str
) -> tuple[Tensor, Tensor]:
    """Value and gradient (w.r.t. ``v``) of "semihard" from the N x P x M comparison: per pair
    (a, p) the smallest negative :math:`v_{an} > v_{ap}`, else the largest negative."""
    n, m = v.shape
    p = cols.shape[1]
    inf = float("inf")
    losses = torch.zeros(n, p, dtype=v.dtype, device=v.device)
    chosen = torch.zeros(n, p, dtype=torch.long, device=v.device)
    has_neg = neg_mask.any(dim=1)
    v_neg = v.masked_fill(~neg_mask, inf)
    big = torch.finfo(v.dtype).max
    for lo in _row_chunks(n, p * m):
        hi = min(n, lo + max(1, _CHUNK_ENTRIES // max(p * m, 1)))
        vr, negr = v[lo:hi], neg_mask[lo:hi]
        vp = vr.gather(1, cols[lo:hi])
        # gap v_an - v_ap to each negative (+inf for non-negatives); a gap <= 0 (not strictly
        # farther) is clamped to 0 and then lifted to ``big``, so the row minimum is the nearest
        # strictly farther negative, or >= ``big`` when there is none (plain arithmetic, which
        # is much faster than a broadcast ``where``/``masked_fill`` on CPU)
        gap = (v_neg[lo:hi].unsqueeze(1) - vp.unsqueeze(2)).clamp_min_(0.0)
        gap.add_(torch.sign(gap).sub_(1.0).mul_(-big))
        near_gap, near_idx = gap.min(dim=2)
        far_idx = vr.masked_fill(~negr, -inf).argmax(dim=1, keepdim=True).expand(-1, p)
        found = near_gap < big
        idx = torch.where(found, near_idx, far_idx)
        chosen[lo:hi] = idx
        losses[lo:hi] = (vp - vr.gather(1, idx) + margin).clamp_min_(0.0)
    valid = real & has_neg.unsqueeze(1)
    losses.mul_(valid)
    active = losses > 0
    denom = _denominator(valid.sum(), active.sum(), reduction, v.dtype)
    w = active.to(v.dtype).div_(denom)
    grad = torch.zeros_like(v).scatter_add_(1, cols, w).scatter_add_(1, chosen, -w)
    return losses.sum() / denom, grad


def _all_triplets(v: Tensor, pos_mask: Tensor, neg_mask: Tensor, margin: float, reduction: str) -> Tensor:
    sorted_v, n_neg = _sorted_negatives(v, neg_mask)
    cols = torch.arange(v.shape[1], device=v.device)
    is_neg = cols.unsqueeze(0) < n_neg.unsqueeze(1)
    # shift every row by its smallest negative (a constant per row, so value and gradient are
    # unchanged) to keep the prefix sums small and their differences accurate
    shift = torch.where(n_neg > 0, sorted_v[:, 0], torch.zeros_like(sorted_v[:, 0])).detach()
    centred = torch.where(is_neg, sorted_v - shift.unsqueeze(1), torch.zeros_like(sorted_v))
    prefix = torch.cat([torch.zeros_like(centred[:, :1]), centred.cumsum(dim=1)], dim=1)
    threshold = v + margin  # t_ap, read at positive entries
    # number of negatives strictly below t_ap = number of active triplets of (a, p)
    count = torch.searchsorted(sorted_v.contiguous(), threshold.detach().contiguous(), side="left")
    hinge_sum = count.to(v.dtype) * (threshold - shift.unsqueeze(1)) - prefix.gather(1, count)
    n_all = (pos_mask * n_neg.unsqueeze(1)).sum()
    n_active = torch.where(pos_mask, count, torch.zeros_like(count)).sum()
    return reduce_masked(hinge_sum, pos_mask, reduction, count=n_all, active_count=n_active)


def _semihard(v: Tensor, pos_mask: Tensor, neg_mask: Tensor, margin: float, reduction: str) -> Tensor:
    sorted_v, n_neg = _sorted_negatives(v, neg_mask)
    # first negative strictly farther than the positive; if none, the farthest negative
    first_farther = torch.searchsorted(sorted_v.contiguous(), v.detach().contiguous(), side="right")
    last = (n_neg - 1).clamp_min(0).unsqueeze(1).expand_as(first_farther)
    chosen = torch.where(first_farther < n_neg.unsqueeze(1), first_farther, last)
    v_neg = sorted_v.gather(1, chosen)
    valid = pos_mask & (n_neg > 0).unsqueeze(1)
    # ``where`` before the arithmetic keeps the +inf of rows without negatives out of the graph
    v_neg = torch.where(valid, v_neg, v.detach())
    losses = torch.relu(v - v_neg + margin)
    return reduce_masked(losses, valid, reduction)


def _batch_hard(v: Tensor, pos_mask: Tensor, neg_mask: Tensor, margin: float, reduction: str) -> Tensor:
    has_pos, has_neg = pos_mask.any(dim=1), neg_mask.any(dim=1)
    valid = has_pos & has_neg
    neg_inf = torch.full_like(v, float("-inf"))
    hardest_pos = torch.where(pos_mask, v, neg_inf).amax(dim=1)
    hardest_neg = torch.where(neg_mask, v, -neg_inf).amin(dim=1)
    zero = torch.zeros_like(hardest_pos)
    hardest_pos = torch.where(valid, hardest_pos, zero)
    hardest_neg = torch.where(valid, hardest_neg, zero)
    losses = torch.relu(hardest_pos - hardest_neg + margin)
    return reduce_masked(losses, valid, reduction)


def triplet_loss(
    matrix: Tensor,
    pos_mask: Tensor,
    neg_mask: Tensor,
    margin: float = 0.2,
    mining: str = "all",
    higher_is_closer: bool = False,
    reduction: str = "mean",
) -> Tensor:
    r"""Triplet margin loss of an N x M pair matrix.

    Args:
        matrix: N x M distances (``higher_is_closer=False``) or similarities (``True``; then the
            loss is :math:`[s_{an} - s_{ap} + m]_+`, the margin in similarity units). Row a is an
            anchor; positives and negatives are read from that row only, so a matrix of a batch
            against a reference set (M != N) works as well.
        pos_mask, neg_mask: boolean N x M masks (:func:`deepmetric.functional.label_masks`).
        margin: :math:`m \ge 0`.
        mining: ``"all"``, ``"semihard"`` or ``"batch_hard"`` (see the module docstring).
        reduction: ``"mean"`` (default): mean over all mined triplets -- every (a, p, n) for
            "all", one per anchor-positive pair for "semihard", one per anchor for "batch_hard";
            ``"mean_active"``: mean over the triplets with a non-zero loss only (Hermans et al.'s
            "batch all" average); ``"sum"``.

    Anchors without a positive or without a negative contribute no triplet; when no triplet
    exists at all (one class, or all labels distinct) the loss is 0, connected to the graph.
    """
    check_pair_inputs(matrix, pos_mask, neg_mask)
    check_mining(mining)
    check_reduction(reduction)
    v = -matrix if higher_is_closer else matrix
    if mining in ("all", "semihard") and matrix.shape[0] > 0 and matrix.shape[1] > 0:
        table = positive_columns(pos_mask)
        if table is not None:
            compared = _all_compared if mining == "all" else _semihard_compared
            value, grad_v = compared(v.detach(), pos_mask, neg_mask, *table, margin, reduction)
            return _finish(matrix, value, grad_v, higher_is_closer)
    if mining == "all":
        return _all_triplets(v, pos_mask, neg_mask, margin, reduction)
    if mining == "semihard":
        return _semihard(v, pos_mask, neg_mask, margin, reduction)
    return _batch_hard(v, pos_mask, neg_mask, margin, reduction)
