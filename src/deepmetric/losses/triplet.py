r"""Triplet margin loss module (FaceNet; Hermans et al. 2017) with all / semi-hard / batch-hard mining."""

from __future__ import annotations

from torch import Tensor

from deepmetric.errors import ConfigError, unknown_name_message
from deepmetric.functional.reductions import check_reduction
from deepmetric.functional.triplet import check_mining, triplet_loss
from deepmetric.losses.base import PairLoss

#: pair matrices the triplet loss can be written in
TRIPLET_METRICS: tuple[str, ...] = ("euclidean", "squared_euclidean", "cosine", "dot")


class TripletLoss(PairLoss):
    r"""Triplet margin loss :math:`[v_{ap} - v_{an} + m]_+` over mined triplets.

    :math:`v` is the distance for ``metric="euclidean"`` (default) or ``"squared_euclidean"``,
    and minus the similarity for ``"cosine"`` / ``"dot"`` (then the loss is
    :math:`[s_{an} - s_{ap} + m]_+`, the margin in similarity units).

    Schroff, Kalenichenko, Philbin, "FaceNet: A Unified Embedding for Face Recognition and
    Clustering", CVPR 2015 (arXiv 1503.03832); Hermans, Beyer, Leibe, "In Defense of the Triplet
    Loss for Person Re-Identification", arXiv 1703.07737, 2017.

    Args:
        margin: :math:`m \ge 0`.
        mining: ``"all"`` (every valid triplet, computed in O(N^2 log N) memory/time, no N^3
            tensor), ``"semihard"`` (per anchor-positive pair the nearest negative farther than the
            positive; fallback when none is farther: the farthest negative) or ``"batch_hard"``
            (hardest positive and hardest negative per anchor). See
            :mod:`deepmetric.functional.triplet`.
        metric: ``"euclidean"``, ``"squared_euclidean"``, ``"cosine"`` or ``"dot"``.
        reduction: ``"mean"`` over all mined triplets (default), ``"mean_active"`` over those with
            a non-zero loss, or ``"sum"``.

    ``matrix_loss(matrix, pos_mask, neg_mask)`` expects the N x M matrix of ``self.metric``
    (distances when ``higher_is_closer`` is False, similarities when True), row a = anchor a; for
    ``metric="cosine"`` that is :func:`~deepmetric.functional.cosine_similarity_matrix`. A batch
    without any triplet (one class, or all labels distinct) gives 0, never NaN.
    """

    closed_form_distances = True

    def __init__(
        self,
        margin: float = 0.2,
        mining: str = "all",
        metric: str = "euclidean",
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        if margin < 0:
            raise ConfigError(f"margin must be >= 0, got {margin}; typical values are 0.1-0.3")
        check_mining(mining)
        if metric not in TRIPLET_METRICS:
            raise ConfigError(unknown_name_message("metric", metric, TRIPLET_METRICS))
        check_reduction(reduction)
        self.margin = float(margin)
        self.mining = mining
        # an instance attribute shadowing PairLoss.metric, so pair_matrix and higher_is_closer
        # follow the chosen metric
        self.metric = metric  # type: ignore[misc]
        self.reduction = reduction

    def matrix_loss(self, matrix: Tensor, pos_mask: Tensor, neg_mask: Tensor) -> Tensor:
        return triplet_loss(
            matrix, pos_mask, neg_mask, self.margin, self.mining, self.higher_is_closer, self.reduction
        )

    def extra_repr(self) -> str:
        return (
            f"margin={self.margin}, mining='{self.mining}', metric='{self.metric}', "
            f"reduction='{self.reduction}'"
        )
