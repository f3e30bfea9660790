r"""Lifted structured loss module (Song et al., CVPR 2016), smooth form."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from deepmetric.functional.lifted import lifted_structure_loss
from deepmetric.losses.base import PairLoss


class LiftedStructureLoss(PairLoss):
    r"""Smooth lifted structured loss.

    .. math::

        J_{ij} = \log\Big(\sum_{k \in N_i} e^{\alpha - d_{ik}} + \sum_{l \in N_j} e^{\alpha - d_{jl}}\Big)
                 + d_{ij}, \qquad L = \frac{1}{2|P|} \sum_{(i,j) \in P} [J_{ij}]_+^2

    Song, Xiang, Jegelka, Savarese, "Deep Metric Learning via Lifted Structured Feature
    Embedding", CVPR 2016 (arXiv 1511.06452). Computed with log-sum-exp in one O(N^2) pass.

    Args:
        margin: :math:`\alpha`, the margin on Euclidean distances.

    ``matrix_loss(matrix, pos_mask, neg_mask)`` expects the *square* N x N matrix of Euclidean
    *distances* of the batch against itself (``higher_is_closer`` is False). A batch without a
    positive pair, or with one class only, gives 0, never NaN.
    """

    closed_form_distances = True

    metric: ClassVar[str] = "euclidean"

    def __init__(self, margin: float = 1.0) -> None:
        super().__init__()
        self.margin = float(margin)

    def matrix_loss(self, matrix: Tensor, pos_mask: Tensor, neg_mask: Tensor) -> Tensor:
        return lifted_structure_loss(matrix, pos_mask, neg_mask, self.margin)

    def extra_repr(self) -> str:
        return f"margin={self.margin}"
