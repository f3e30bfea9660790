r"""Multi-class N-pair loss module (Sohn, NeurIPS 2016)."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from deepmetric.errors import ConfigError, unknown_name_message
from deepmetric.functional.npair import (
    class_pair_indices,
    class_pairs_from_mask,
    l2_penalty,
    npair_class_pairs_loss,
    npair_loss,
)
from deepmetric.losses.base import PairLoss


NPAIR_MODES = ("all", "one_per_class")


class NPairLoss(PairLoss):
    r"""Multi-class N-pair loss with an L2 penalty on the embeddings.

    .. math::

        L = \frac{1}{|P|} \sum_{(a,p) \in P} \log\Big(1 + \sum_{n \in N_a}
            \exp(f_a^\top f_n - f_a^\top f_p)\Big)
            + \lambda\, \frac{1}{N} \sum_i \|f_i\|_2^2

    Sohn, "Improved Deep Metric Learning with Multi-class N-pair Loss Objective", NeurIPS 2016.
    ``pairs="all"`` (default) generalises it to P x K batches: every ordered positive pair
    (a, p) is an anchor-positive pair and every sample of another class is a negative of a.
    ``pairs="one_per_class"`` is the paper's own construction (and pytorch-metric-learning's
    ``NPairsLoss``): one pair per class (its first two samples in batch order), each anchor
    against the other pairs' positives, a P x P softmax; it uses less of a P x K batch and is
    cheaper (see :mod:`deepmetric.functional.npair`). The embeddings are used as given (dot
    products, no normalisation), as in the paper.

    Args:
        pairs: ``"all"`` or ``"one_per_class"``, as above.
        l2_reg: :math:`\lambda \ge 0`, weight of the mean squared embedding norm (the paper's
            regulariser; 0 switches it off). It is returned by :meth:`regularizer` and added by
            ``forward``, not by :meth:`matrix_loss`.

    ``matrix_loss(matrix, pos_mask, neg_mask)`` expects the N x M *dot-product similarity*
    matrix :math:`f_a^\top f_j` (``higher_is_closer`` is True), row a = anchor. A batch without a
    positive pair gives 0 (plus the regulariser), never NaN.
    """

    metric: ClassVar[str] = "dot"
    #: ``compute`` is ``matrix_loss(pair_matrix) + regularizer``, only computed more cheaply
    compute_is_matrix_loss: ClassVar[bool] = True

    def __init__(self, l2_reg: float = 0.02, pairs: str = "all") -> None:
        super().__init__()
        if l2_reg < 0:
            raise ConfigError(f"l2_reg must be >= 0, got {l2_reg}; use 0 to switch the penalty off")
        if pairs not in NPAIR_MODES:
            raise ConfigError(unknown_name_message("N-pair pairs mode", pairs, NPAIR_MODES))
        self.l2_reg = float(l2_reg)
        self.pairs = pairs

    def compute(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        if self.pairs == "all":
            return super().compute(embeddings, labels)
        # only the P x P anchor-by-positive block is needed, not the N x N matrix
        anchors, positives = class_pair_indices(labels)
        sim = self.pair_matrix(embeddings[anchors], embeddings[positives])
        return npair_class_pairs_loss(sim) + self.regularizer(embeddings)

    def matrix_loss(self, matrix: Tensor, pos_mask: Tensor, neg_mask: Tensor) -> Tensor:
        if self.pairs == "all":
            return npair_loss(matrix, pos_mask, neg_mask)
        if matrix.shape[0] != matrix.shape[1]:
            raise ConfigError(
                'N-pair with pairs="one_per_class" needs the square N x N matrix of a batch '
                'against itself; use pairs="all" with a separate reference set'
            )
        anchors, positives = class_pairs_from_mask(pos_mask)
        return npair_class_pairs_loss(matrix[anchors][:, positives])

    def regularizer(self, embeddings: Tensor) -> Tensor | float:
        return l2_penalty(embeddings, self.l2_reg) if self.l2_reg > 0 else 0.0

    def extra_repr(self) -> str:
        return f"l2_reg={self.l2_reg}, pairs={self.pairs!r}"
