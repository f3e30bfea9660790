r"""Multi-similarity loss module (Wang et al., CVPR 2019, arXiv 1904.06627)."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from deepmetric.errors import ConfigError
from deepmetric.functional.multi_similarity import multi_similarity_loss
from deepmetric.losses.base import PairLoss


class MultiSimilarityLoss(PairLoss):
    r"""Multi-similarity loss on cosine similarities, with the paper's pair mining.

    .. math::

        L = \frac{1}{N}\sum_i \Big[\frac{1}{\alpha}\log\big(1 + \sum_{j \in P_i}
            e^{-\alpha (S_{ij} - \lambda)}\big) + \frac{1}{\beta}\log\big(1 + \sum_{k \in N_i}
            e^{\beta (S_{ik} - \lambda)}\big)\Big]

    Wang, Han, Huang, Dong, Scott, "Multi-Similarity Loss with General Pair Weighting for Deep
    Metric Learning", CVPR 2019 (arXiv 1904.06627).

    Mining (``mining=True``): keep negatives with :math:`S_{ik} + \epsilon > \min_{P} S_{ij}`
    and positives with :math:`S_{ij} - \epsilon < \max_{N} S_{ik}`.

    Args:
        alpha: positive scale (> 0), default 2.
        beta: negative scale (> 0), default 50.
        base: similarity margin :math:`\lambda`, default 0.5.
        epsilon: mining margin (>= 0), default 0.1.
        mining: whether to mine pairs before the loss, default True.

    Empty sets: an anchor's term over an empty (mined) set is 0; a batch where no anchor keeps
    a pair gives 0 with a zero gradient.
    """

    metric: ClassVar[str] = "cosine"

    def __init__(
        self,
        alpha: float = 2.0,
        beta: float = 50.0,
        base: float = 0.5,
        epsilon: float = 0.1,
        mining: bool = True,
    ) -> None:
        super().__init__()
        if alpha <= 0 or beta <= 0:
            raise ConfigError(
                f"multi_similarity needs alpha > 0 and beta > 0, got alpha={alpha}, beta={beta}; "
                "use the paper's alpha=2, beta=50"
            )
        if epsilon < 0:
            raise ConfigError(
                f"multi_similarity epsilon must be >= 0, got {epsilon}; use 0.1 (the paper's value)"
            )
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.base = float(base)
        self.epsilon = float(epsilon)
        self.mining = bool(mining)

    def matrix_loss(self, matrix: Tensor, pos_mask: Tensor, neg_mask: Tensor) -> Tensor:
        return multi_similarity_loss(
            matrix,
            pos_mask,
            neg_mask,
            alpha=self.alpha,
            beta=self.beta,
            base=self.base,
            epsilon=self.epsilon,
            mining=self.mining,
        )

    def extra_repr(self) -> str:
        return (
            f"alpha={self.alpha}, beta={self.beta}, base={self.base}, "
            f"epsilon={self.epsilon}, mining={self.mining}"
        )
