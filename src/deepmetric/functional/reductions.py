"""Reducing a masked matrix of per-pair (or per-group) losses to a scalar, shared by the pair losses."""

from __future__ import annotations

import torch
from torch import Tensor

from deepmetric.errors import ConfigError, unknown_name_message

#: reductions understood by :func:`reduce_masked`
REDUCTIONS: tuple[str, ...] = ("mean", "mean_active", "sum")


def check_reduction(reduction: str) -> None:
    """Raise :class:`ConfigError` unless ``reduction`` is one of :data:`REDUCTIONS`."""
    if reduction not in REDUCTIONS:
        raise ConfigError(unknown_name_message("reduction", reduction, REDUCTIONS))


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
