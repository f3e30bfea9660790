r"""Ranked List Loss (Wang et al., CVPR 2019, arXiv:1903.03238; TPAMI extension).

Formulas: :mod:`deepmetric.functional.ranked_list`.
"""

from __future__ import annotations

from torch import Tensor

from deepmetric.functional.ranked_list import check_ranked_list_params, ranked_list_loss
from deepmetric.losses.base import PairLoss


class RankedListLoss(PairLoss):
    r"""Ranked List Loss on Euclidean distances; every sample of the batch is a query.

    .. math::

        L = \frac{1}{N} \sum_i \big[c_P L_P(i) + \lambda L_N(i)\big], \quad
        L_P(i) = \frac{\sum_{P^*_i} w_{ij} (d_{ij} - (\alpha - m))}{\sum_{P^*_i} w_{ij}}, \quad
        L_N(i) = \frac{\sum_{N^*_i} w_{ij} (\alpha - d_{ij})}{\sum_{N^*_i} w_{ij}}

    with non-trivial sets :math:`P^*_i = \{j^+ : d_{ij} > \alpha - m\}`,
    :math:`N^*_i = \{j^- : d_{ij} < \alpha\}`, constant weights
    :math:`w = \exp(T_n(\alpha - d))` on negatives and :math:`\exp(T_p(d - (\alpha - m)))` on
    positives, and :math:`c_P = 1` (``variant="cvpr"``, Wang et al. CVPR 2019,
    arXiv:1903.03238) or :math:`1 - \lambda` (``variant="tpami"``).

    Args:
        variant: ``"cvpr"`` or ``"tpami"``.
        alpha: negative boundary :math:`\alpha` (1.2).
        margin: :math:`m`; positives are pulled inside radius :math:`\alpha - m` (0.4).
        t_n: negative temperature :math:`T_n` (10); 0 = uniform, large = hardest negative only.
        t_p: positive temperature :math:`T_p` (0 = plain mean, TPAMI).
        lam: :math:`\lambda` (0.5).

    Empty sets: a query with no non-trivial positive (or negative) contributes 0 for that part;
    the batch loss is the mean over all queries, so a batch where every constraint holds is 0.
    """

    metric = "euclidean"

    def __init__(
        self,
        variant: str = "cvpr",
        alpha: float = 1.2,
        margin: float = 0.4,
        t_n: float = 10.0,
        t_p: float = 0.0,
        lam: float = 0.5,
    ) -> None:
        super().__init__()
        check_ranked_list_params(alpha, margin, t_n, t_p, lam, variant)
        self.variant = variant
        self.alpha = float(alpha)
        self.margin = float(margin)
        self.t_n = float(t_n)
        self.t_p = float(t_p)
        self.lam = float(lam)

    def matrix_loss(self, matrix: Tensor, pos_mask: Tensor, neg_mask: Tensor) -> Tensor:
        return ranked_list_loss(
            matrix, pos_mask, neg_mask, self.alpha, self.margin, self.t_n, self.t_p, self.lam, self.variant
        )

    def extra_repr(self) -> str:
        return (
            f"variant={self.variant!r}, alpha={self.alpha}, margin={self.margin}, "
            f"t_n={self.t_n}, t_p={self.t_p}, lam={self.lam}"
        )
