r"""Contrastive loss module (Hadsell, Chopra, LeCun, CVPR 2006)."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from deepmetric.errors import ConfigError
from deepmetric.functional.contrastive import contrastive_loss
from deepmetric.functional.reductions import check_reduction
from deepmetric.losses.base import PairLoss


class ContrastiveLoss(PairLoss):
    r"""Contrastive loss on Euclidean distances.

    .. math::

        L = \operatorname{red}_{(i,j) \in P} [d_{ij} - m_+]_+^p
          + \operatorname{red}_{(i,j) \in N} [m_- - d_{ij}]_+^p

    Hadsell, Chopra, LeCun, "Dimensionality Reduction by Learning an Invariant Mapping",
    CVPR 2006. The paper's form is ``pos_margin=0, squared=True`` (up to its constant 1/2).

    Args:
        pos_margin: :math:`m_+`, positives closer than this cost nothing (>= 0).
        neg_margin: :math:`m_-`, negatives farther than this cost nothing (> pos_margin).
        squared: square each hinge (:math:`p = 2`) instead of :math:`p = 1`.
        reduction: ``"mean"`` (default): mean over all positive pairs plus mean over all negative
            pairs, each unordered pair once; ``"mean_active"``: each mean only over pairs with a
            non-zero loss; ``"sum"``: plain sums.

    ``matrix_loss(matrix, pos_mask, neg_mask)`` expects an N x M matrix of Euclidean
    *distances* (``higher_is_closer`` is False) and boolean masks of the same shape. Every mask
    entry is an ordered pair; for a symmetric N x N matrix this counts each unordered pair once in
    every reduction (``"sum"`` is halved for square input), and for an asymmetric one (e.g. after
    symmetrical synthesis) both directions are averaged.
    A batch without positive (or negative) pairs gives 0 for that term, never NaN.
    """

    closed_form_distances = True

    metric: ClassVar[str] = "euclidean"

    def __init__(
        self,
        pos_margin: float = 0.0,
        neg_margin: float = 1.0,
        squared: bool = False,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        if pos_margin < 0:
            raise ConfigError(
                f"pos_margin must be >= 0, got {pos_margin}; use 0 to pull positives fully together"
            )
        if neg_margin <= pos_margin:
            raise ConfigError(
                f"neg_margin ({neg_margin}) must be larger than pos_margin ({pos_margin}); "
                "raise neg_margin or lower pos_margin"
            )
        check_reduction(reduction)
        self.pos_margin = float(pos_margin)
        self.neg_margin = float(neg_margin)
        self.squared = bool(squared)
        self.reduction = reduction

    def matrix_loss(self, matrix: Tensor, pos_mask: Tensor, neg_mask: Tensor) -> Tensor:
        return contrastive_loss(
            matrix, pos_mask, neg_mask, self.pos_margin, self.neg_margin, self.squared, self.reduction
        )

    def extra_repr(self) -> str:
        return (
            f"pos_margin={self.pos_margin}, neg_margin={self.neg_margin}, "
            f"squared={self.squared}, reduction='{self.reduction}'"
        )
