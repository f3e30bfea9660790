r"""Additive-margin softmax loss modules: ArcFace, CosFace and sub-center ArcFace.

Each owns its class weights ``weight`` (C x D; sub-center ArcFace: (C K) x D), needs
``num_classes`` and ``embedding_dim`` (the trainer fills both in; building without them is a
:class:`~deepmetric.errors.ConfigError` naming the key) and offers the classifier contract of
:mod:`deepmetric.losses.contracts`: ``logits(embeddings)`` are the UN-margined scaled cosines
:math:`s \cos\theta_{ic}` (the margin is a training device only), and ``classifier_trained()``
is True. The formulas, the :math:`\theta + m > \pi` handling and the float32 policy are in
:mod:`deepmetric.functional.margin_softmax`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from deepmetric.errors import ConfigError
from deepmetric.functional.classification import check_class_labels
from deepmetric.functional.margin_softmax import (
    COS_EPS,
    arcface_target,
    cosface_target,
    margin_cross_entropy,
    normalized_cosines,
    subcenter_cosines,
)
from deepmetric.functional.validation import check_embeddings
from deepmetric.losses.base import MetricLoss
from deepmetric.losses.proxy_anchor import check_sizes


def _check_scale(name: str, scale: float) -> None:
    if not scale > 0:
        raise ConfigError(f"{name} scale must be > 0, got {scale}; use 64 (the paper's)")


def _check_angular_margin(name: str, margin: float) -> None:
    if not 0.0 <= margin < math.pi / 2:
        raise ConfigError(
            f"{name} margin is an angle in radians and must be in [0, pi/2), got {margin}; use 0.5 "
            "(the paper's; PML's ArcFaceLoss takes degrees: 28.6 degrees = 0.5 rad)"
        )


class _MarginSoftmax(MetricLoss):
    """Shared parts: sizes, scale, the ``weight`` parameter and the classifier contract."""

    loss_name = "margin_softmax"
    rows_per_class = 1

    def __init__(self, num_classes: int | None, embedding_dim: int | None, scale: float) -> None:
        super().__init__()
        check_sizes(self.loss_name, num_classes, embedding_dim)  # type: ignore[arg-type]
        _check_scale(self.loss_name, scale)
        self.num_classes = int(num_classes)  # type: ignore[arg-type]
        self.embedding_dim = int(embedding_dim)  # type: ignore[arg-type]
        self.scale = float(scale)
        rows = self.num_classes * self.rows_per_class
        # rows start with norm close to 1, as NormalizedSoftmaxLoss's
        self.weight = nn.Parameter(torch.randn(rows, self.embedding_dim) / math.sqrt(self.embedding_dim))

    def cosines(self, embeddings: Tensor) -> Tensor:
        """N x C class cosines (float32, or float64 for float64 input)."""
        return normalized_cosines(embeddings, self.weight)

    def logits(self, embeddings: Tensor) -> Tensor:
        r"""N x C class scores for prediction: :math:`s \cos\theta_{ic}`, without the margin."""
        return self.cosines(embeddings) * self.scale

    def classifier_trained(self) -> bool:
        """Always: the loss is the classifier's (margined) cross-entropy."""
        return True

    def target(self, cos: Tensor) -> Tensor:
        raise NotImplementedError

    def compute(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        # margin_cross_entropy checks that labels are in [0, C) (one-line InputError)
        return margin_cross_entropy(self.cosines(embeddings), labels, self.target, self.scale)


class ArcFaceLoss(_MarginSoftmax):
    r"""ArcFace: cross-entropy over :math:`s\cos\theta_{ic}` with target logit :math:`s\cos(\theta_{iy_i} + m)`.

    .. math::

        L = -\frac{1}{N}\sum_i \log \frac{e^{s \cos(\theta_{iy_i} + m)}}
            {e^{s \cos(\theta_{iy_i} + m)} + \sum_{c \ne y_i} e^{s \cos\theta_{ic}}}

    Deng, Guo, Xue, Zafeiriou, "ArcFace: Additive Angular Margin Loss for Deep Face
    Recognition", CVPR 2019 (arXiv 1801.07698).

    Args:
        num_classes: number of training classes C (labels must be in ``[0, C)``).
        embedding_dim: embedding size D.
        scale: :math:`s` (> 0), default 64.
        margin: :math:`m` in RADIANS, in ``[0, pi/2)``, default 0.5. (PML's ``ArcFaceLoss``
            takes DEGREES: its default 28.6 is 0.5 rad.)
        easy_margin: apply the margin only where :math:`\cos\theta > 0`, default False.

    Where :math:`\theta + m > \pi` (:math:`\cos\theta \le \cos(\pi - m)`) the target logit is
    the linear :math:`s(\cos\theta - m\sin m)` so it keeps falling with the angle (see
    :mod:`deepmetric.functional.margin_softmax`). Computed in float32 whatever the input
    dtype or autocast; the target cosine is clamped to :math:`[-1+10^{-6}, 1-10^{-6}]`.
    An empty batch gives 0; a zero embedding has cosine 0 with every class.
    """

    loss_name = "arcface"

    def __init__(
        self,
        num_classes: int | None = None,
        embedding_dim: int | None = None,
        scale: float = 64.0,
        margin: float = 0.5,
        easy_margin: bool = False,
    ) -> None:
        super().__init__(num_classes, embedding_dim, scale)
        _check_angular_margin(self.loss_name, margin)
        self.margin = float(margin)
        self.easy_margin = bool(easy_margin)

    def target(self, cos: Tensor) -> Tensor:
        return arcface_target(cos, self.margin, self.easy_margin, COS_EPS)

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, embedding_dim={self.embedding_dim}, scale={self.scale}, "
            f"margin={self.margin}, easy_margin={self.easy_margin}"
        )


class CosFaceLoss(_MarginSoftmax):
    r"""CosFace / AM-softmax: target logit :math:`s(\cos\theta_{iy_i} - m)`.

    .. math::

        L = -\frac{1}{N}\sum_i \log \frac{e^{s (\cos\theta_{iy_i} - m)}}
            {e^{s (\cos\theta_{iy_i} - m)} + \sum_{c \ne y_i} e^{s \cos\theta_{ic}}}

    Wang et al., "CosFace: Large Margin Cosine Loss for Deep Face Recognition", CVPR 2018
    (arXiv 1801.09414); the same loss as AM-softmax (Wang, Cheng, Liu, Liu, IEEE SPL 2018).

    Args:
        num_classes, embedding_dim: as :class:`ArcFaceLoss`.
        scale: :math:`s` (> 0), default 64.
        margin: :math:`m` (>= 0) in cosine units, default 0.35 (PML's ``CosFaceLoss`` uses the
            same units).

    Computed in float32 whatever the input dtype; an empty batch gives 0.
    """

    loss_name = "cosface"

    def __init__(
        self,
        num_classes: int | None = None,
        embedding_dim: int | None = None,
        scale: float = 64.0,
        margin: float = 0.35,
    ) -> None:
        super().__init__(num_classes, embedding_dim, scale)
        if margin < 0:
            raise ConfigError(f"cosface margin must be >= 0, got {margin}; use 0.35 (the paper's)")
        self.margin = float(margin)

    def target(self, cos: Tensor) -> Tensor:
        return cosface_target(cos, self.margin)

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, embedding_dim={self.embedding_dim}, scale={self.scale}, "
            f"margin={self.margin}"
        )


@dataclass
class DominantSubcenters:
    """What :meth:`SubCenterArcFaceLoss.drop_non_dominant` found.

    * ``dominant`` (C,): index ``k`` of each class's dominant sub-center;
    * ``counts`` (C x K): how many of the class's samples are nearest to each sub-center;
    * ``angles_degrees`` (N,): angle of each sample to its class's dominant sub-center;
    * ``outliers`` (N,) bool: angle > the threshold (the paper's noisy samples);
    * ``centers`` (C x D): the dominant sub-center rows (detached copies).
    """

    dominant: Tensor
    counts: Tensor
    angles_degrees: Tensor
    outliers: Tensor
    centers: Tensor

    @property
    def outlier_indices(self) -> Tensor:
        """Row indices of the outliers."""
        return self.outliers.nonzero().flatten()


class SubCenterArcFaceLoss(ArcFaceLoss):
    r"""Sub-center ArcFace: K sub-centers per class, :math:`\cos\theta_{ic} = \max_k \cos\theta_{i,ck}`, then ArcFace.

    .. math::

        \cos\theta_{ic} = \max_{k=1..K} \hat f_i \cdot \hat w_{ck}, \qquad
        L = -\frac{1}{N}\sum_i \log \frac{e^{s \cos(\theta_{iy_i} + m)}}
            {e^{s \cos(\theta_{iy_i} + m)} + \sum_{c \ne y_i} e^{s \cos\theta_{ic}}}

    Deng, Guo, Liu, Yu, Zafeiriou, "Sub-center ArcFace: Boosting Face Recognition by
    Large-scale Noisy Web Faces", ECCV 2020.

    Args:
        num_classes, embedding_dim, scale, margin, easy_margin: as :class:`ArcFaceLoss`.
        subcenters: K (>= 1), default 3 (the paper's).

    ``weight`` is (C K) x D, class-major: row ``c * K + k`` is sub-center ``k`` of class ``c``.
    ``logits`` are :math:`s \max_k \cos\theta_{i,ck}` (no margin). The paper's cleaning step is
    :meth:`drop_non_dominant`. Same θ + m > π handling and float32 policy as ArcFace.
    """

    loss_name = "subcenter_arcface"

    def __init__(
        self,
        num_classes: int | None = None,
        embedding_dim: int | None = None,
        scale: float = 64.0,
        margin: float = 0.5,
        easy_margin: bool = False,
        subcenters: int = 3,
    ) -> None:
        if isinstance(subcenters, bool) or not isinstance(subcenters, int) or subcenters < 1:
            raise ConfigError(
                f"subcenter_arcface needs subcenters as a positive integer, got {subcenters!r}; use 3 "
                "(the paper's)"
            )
        self.rows_per_class = subcenters
        super().__init__(num_classes, embedding_dim, scale, margin, easy_margin)

    @property
    def subcenters(self) -> int:
        """K, the sub-centers per class (1 after :meth:`drop_non_dominant`)."""
        return self.rows_per_class

    def cosines(self, embeddings: Tensor) -> Tensor:
        return subcenter_cosines(normalized_cosines(embeddings, self.weight), self.num_classes, self.subcenters)

    @torch.no_grad()
    def drop_non_dominant(
        self, embeddings: Tensor, labels: Tensor, threshold_degrees: float = 75.0, inplace: bool = True
    ) -> DominantSubcenters:
        r"""The paper's cleaning step: keep each class's dominant sub-center, flag far samples.

        Each sample is assigned to the nearest sub-center of ITS OWN class; a class's
        *dominant* sub-center is the one most of its samples are assigned to (ties: the lowest
        index; a class with no sample in ``embeddings`` keeps sub-center 0, so pass the
        embeddings of the whole training set). A sample whose angle to its class's dominant
        sub-center exceeds ``threshold_degrees`` (paper: 75) is an *outlier* -- a likely noisy
        label, to be dropped from the training set before training on.

        With ``inplace`` (default) the non-dominant sub-centers are dropped: ``weight`` is
        replaced by a NEW C x D parameter holding the dominant rows and K becomes 1, so the
        loss is plain ArcFace from then on. Rebuild the optimizer afterwards (the old
        parameter, and any momentum state of it, is gone); a state dict saved afterwards holds a
        C x D ``weight`` and loads into a loss built with ``subcenters=1``. With
        ``inplace=False`` nothing changes. Returns a :class:`DominantSubcenters`.
        """
        check_embeddings(embeddings, labels)
        check_class_labels(labels, self.num_classes)
        if not 0.0 <= threshold_degrees <= 180.0:
            raise ConfigError(
                f"threshold_degrees must be an angle in [0, 180], got {threshold_degrees}; use 75 "
                "(the paper's)"
            )
        num_classes, k = self.num_classes, self.subcenters
        cos = normalized_cosines(embeddings, self.weight).view(-1, num_classes, k)
        labels = labels.long()
        rows = torch.arange(labels.numel(), device=labels.device)
        own = cos[rows, labels]  # N x K: cosines to the sub-centers of the own class
        nearest = own.argmax(dim=1)
        counts = torch.zeros(num_classes, k, dtype=torch.long, device=cos.device)
        counts.index_put_((labels, nearest), torch.ones_like(nearest), accumulate=True)
        dominant = counts.argmax(dim=1)
        to_dominant = own.gather(1, dominant[labels].view(-1, 1)).squeeze(1)
        angles = torch.rad2deg(torch.acos(to_dominant.clamp(-1.0, 1.0)))
        outliers = angles > threshold_degrees
        classes = torch.arange(num_classes, device=dominant.device)
        centers = self.weight.detach().view(num_classes, k, -1)[classes, dominant].clone()
        if inplace and k > 1:
            self.weight = nn.Parameter(centers.clone())
            self.rows_per_class = 1
        return DominantSubcenters(dominant, counts, angles, outliers, centers)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", subcenters={self.subcenters}"


__all__ = ["ArcFaceLoss", "CosFaceLoss", "DominantSubcenters", "SubCenterArcFaceLoss"]
