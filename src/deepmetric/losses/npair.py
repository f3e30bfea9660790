r"""Multi-class N-pair loss module (Sohn, NeurIPS 2016)."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from deepmetric.errors import ConfigError
from deepmetric.functional.npair import l2_penalty, npair_loss
from deepmetric.losses.base import PairLoss


class NPairLoss(PairLoss):
    r"""Multi-class N-pair loss with an L2 penalty on the embeddings.

    .. math::

        L = \frac{1}{|P|} \sum_{(a,p) \in P} \log\Big(1 + \sum_{n \in N_a}
            \exp(f_a^\top f_n - f_a^\top f_p)\Big)
            + \lambda\, \frac{1}{N} \sum_i \|f_i\|_2^2

    Sohn, "Improved Deep Metric Learning with Multi-class N-pair Loss Objective", NeurIPS 2016.
    Generalised to P x K batches: every ordered positive pair (a, p) is an anchor-positive pair
    and every sample of another class is a negative of a (see :mod:`deepmetric.functional.npair`).
    The embeddings are used as given (dot products, no normalisation), as in the paper.

    Args:
        l2_reg: :math:`\lambda \ge 0`, weight of the mean squared embedding norm (the paper's
            regulariser; 0 switches it off). It is returned by :meth:`regularizer` and added by
            ``forward``, not by :meth:`matrix_loss`.

    ``matrix_loss(matrix, pos_mask, neg_mask)`` expects the N x M *dot-product similarity*
    matrix :math:`f_a^\top f_j` (``higher_is_closer`` is True), row a = anchor. A batch without a
    positive pair gives 0 (plus the regulariser), never NaN.
    """

    metric: ClassVar[str] = "dot"

    def __init__(self, l2_reg: float = 0.02) -> None:
        super().__init__()
        if l2_reg < 0:
            raise ConfigError(f"l2_reg must be >= 0, got {l2_reg}; use 0 to switch the penalty off")
        self.l2_reg = float(l2_reg)

    def matrix_loss(self, matrix: Tensor, pos_mask: Tensor, neg_mask: Tensor) -> Tensor:
        return npair_loss(matrix, pos_mask, neg_mask)

    def regularizer(self, embeddings: Tensor) -> Tensor | float:
        return l2_penalty(embeddings, self.l2_reg) if self.l2_reg > 0 else 0.0

    def extra_repr(self) -> str:
        return f"l2_reg={self.l2_reg}"
