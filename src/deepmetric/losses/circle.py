r"""Circle loss module (Sun et al., CVPR 2020, arXiv 2002.10857)."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from deepmetric.errors import ConfigError
from deepmetric.functional.circle import circle_loss
from deepmetric.losses.base import PairLoss


class CircleLoss(PairLoss):
    r"""Circle loss on cosine similarities, per anchor, averaged over anchors.

    .. math::

        L_i = \operatorname{softplus}\Big(
            \log \sum_{j \in N_i} e^{\gamma \alpha_{ij}^n (s_{ij} - m)}
          + \log \sum_{j \in P_i} e^{-\gamma \alpha_{ij}^p (s_{ij} - 1 + m)} \Big),
        \quad \alpha^p = [1 + m - s]_+,\ \alpha^n = [s + m]_+ \text{ (detached)}

    Sun et al., "Circle Loss: A Unified Perspective of Pair Similarity Optimization",
    CVPR 2020 (arXiv 2002.10857), with :math:`O_p = 1+m, O_n = -m, \Delta_p = 1-m, \Delta_n = m`.

    Args:
        m: relaxation margin, default 0.25 (the paper's face-recognition setting; 0.4 for
            fine-grained retrieval). Must be in [0, 1).
        gamma: scale :math:`\gamma` (> 0), default 256 (face; 80 fine-grained, 128 re-ID).

    A pair loss on the ``"cosine"`` matrix (composes with synthesis and mining like the other
    pair losses): ``matrix_loss(sim, pos_mask, neg_mask)``. The loss is the mean of
    :math:`L_i` over anchors having at least one positive AND one negative; other anchors are
    excluded, and a batch without any such anchor gives 0 (never NaN). PML's ``CircleLoss``
    (default ``m=0.4, gamma=80``) averages over non-zero anchor losses instead: the same value
    unless a valid anchor's loss underflows to exactly 0.
    """

    metric: ClassVar[str] = "cosine"

    def __init__(self, m: float = 0.25, gamma: float = 256.0) -> None:
        super().__init__()
        if not 0.0 <= m < 1.0:
            raise ConfigError(f"circle m must be in [0, 1), got {m}; use 0.25 (face) or 0.4 (fine-grained)")
        if not gamma > 0:
            raise ConfigError(f"circle gamma must be > 0, got {gamma}; use 256 (face) or 80 (fine-grained)")
        self.m = float(m)
        self.gamma = float(gamma)

    def matrix_loss(self, matrix: Tensor, pos_mask: Tensor, neg_mask: Tensor) -> Tensor:
        return circle_loss(matrix, pos_mask, neg_mask, m=self.m, gamma=self.gamma)

    def extra_repr(self) -> str:
        return f"m={self.m}, gamma={self.gamma}"


__all__ = ["CircleLoss"]
