r"""Angular loss module (Wang et al., ICCV 2017), N-pair form."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from deepmetric.errors import ConfigError
from deepmetric.functional.angular import angular_loss, check_alpha
from deepmetric.functional.npair import l2_penalty
from deepmetric.losses.base import PairLoss


class AngularLoss(PairLoss):
    r"""Angular loss, N-pair form, on cosine similarities.

    .. math::

        f_{apn} = 4 \tan^2\alpha\, (x_a + x_p)^\top x_n - 2 (1 + \tan^2\alpha)\, x_a^\top x_p,
        \qquad
        L = \frac{1}{|P|} \sum_{(a,p) \in P} \log\Big(1 + \sum_{n \in N_a} e^{f_{apn}}\Big)
            + \lambda\, \frac{1}{N} \sum_i \|f_i\|_2^2

    Wang, Zhou, Wen, Liu, Lin, "Deep Metric Learning with Angular Loss", ICCV 2017
    (arXiv 1708.01682). The formula is derived for unit-length features, so the embeddings are
    L2-normalised (``metric="cosine"``); every ordered positive pair is an anchor-positive pair
    and every sample of another class a negative (see :mod:`deepmetric.functional.angular`).

    Args:
        alpha_degrees: the angle bound :math:`\alpha` in degrees (0 < alpha <= 80; the paper
            uses 36-55, 40-45 typical).
        l2_reg: :math:`\lambda \ge 0`, weight of the mean squared norm of the *raw* embeddings,
            as in the N-pair loss; 0 (default) switches it off. Added by ``forward`` through
            :meth:`regularizer`, not by :meth:`matrix_loss`.

    ``matrix_loss(matrix, pos_mask, neg_mask)`` expects the *full square* N x N cosine
    similarity matrix :math:`S` of the batch against itself (``higher_is_closer`` is True): it
    reads :math:`S_{an}` and :math:`S_{pn}` (negative entries) and :math:`S_{ap}` (positive
    entries). A batch without a positive pair gives 0, never NaN.
    """

    metric: ClassVar[str] = "cosine"

    def __init__(self, alpha_degrees: float = 40.0, l2_reg: float = 0.0) -> None:
        super().__init__()
        check_alpha(alpha_degrees)
        if l2_reg < 0:
            raise ConfigError(f"l2_reg must be >= 0, got {l2_reg}; use 0 to switch the penalty off")
        self.alpha_degrees = float(alpha_degrees)
        self.l2_reg = float(l2_reg)

    def matrix_loss(self, matrix: Tensor, pos_mask: Tensor, neg_mask: Tensor) -> Tensor:
        return angular_loss(matrix, pos_mask, neg_mask, self.alpha_degrees)

    def regularizer(self, embeddings: Tensor) -> Tensor | float:
        return l2_penalty(embeddings, self.l2_reg) if self.l2_reg > 0 else 0.0

    def extra_repr(self) -> str:
        return f"alpha_degrees={self.alpha_degrees}, l2_reg={self.l2_reg}"
