r"""Additive-margin softmax losses (ArcFace, CosFace, sub-center ArcFace) as pure functions.

With :math:`\hat f_i = f_i / \|f_i\|` the normalised embedding, :math:`\hat w_c` the normalised
weight row of class :math:`c` and :math:`\cos\theta_{ic} = \hat f_i \cdot \hat w_c`, every loss here
is a cross-entropy over scaled cosines whose *target* entry is replaced by a margined
:math:`\phi(\cos\theta_{iy_i})`:

.. math::

    L = -\frac{1}{N} \sum_i \log
        \frac{e^{s\,\phi(\cos\theta_{iy_i})}}
             {e^{s\,\phi(\cos\theta_{iy_i})} + \sum_{c \ne y_i} e^{s \cos\theta_{ic}}}

* **ArcFace** (Deng, Guo, Xue, Zafeiriou, "ArcFace: Additive Angular Margin Loss for Deep Face
  Recognition", CVPR 2019, arXiv 1801.07698): :math:`\phi = \cos(\theta + m)`, computed as
  :math:`\cos\theta\cos m - \sin\theta \sin m` with :math:`\sin\theta = \sqrt{1 - \cos^2\theta}`
  (the same value as ``cos(acos(c) + m)`` for :math:`\theta \in [0, \pi]`, without ``acos``).

  *Past* :math:`\theta + m > \pi`, :math:`\cos(\theta + m)` would rise again (a larger angle
  would be rewarded), so where :math:`\cos\theta \le \cos(\pi - m)` the target logit switches
  to the CosFace-style linear extension :math:`\phi = \cos\theta - m \sin m` (the reference
  implementation's ``cos - mm`` with ``mm = sin(pi - m) * m``; PML uses the same). The target
  logit is then non-increasing in :math:`\theta` over all of :math:`[0, \pi]` (with a downward
  step at :math:`\theta = \pi - m`, since :math:`\cos m + m \sin m > 1` for
  :math:`0 < m < \pi/2`; hence the margin must be in :math:`[0, \pi/2)`).

  *Easy margin* (``easy_margin=True``, the reference code's option): the margin applies only
  where :math:`\cos\theta > 0` (:math:`\theta < \pi/2`); elsewhere :math:`\phi = \cos\theta`.
  That target logit is NOT monotonic: it steps up from :math:`-\sin m` to 0 at
  :math:`\theta = \pi/2` (as in the reference code); no :math:`\theta + m > \pi` fallback is
  needed, since :math:`\theta + m < \pi/2 + m < \pi` wherever the margin applies.

* **CosFace** (Wang et al., "CosFace: Large Margin Cosine Loss for Deep Face Recognition",
  CVPR 2018, arXiv 1801.09414; = AM-softmax, Wang, Cheng, Liu, Liu, 2018):
  :math:`\phi = \cos\theta - m`.

* **Sub-center ArcFace** (Deng, Guo, Liu, Yu, Zafeiriou, "Sub-center ArcFace: Boosting Face
  Recognition by Large-scale Noisy Web Faces", ECCV 2020): every class has :math:`K` sub-center
  rows (class-major: row :math:`cK + k`), :math:`\cos\theta_{ic} = \max_k \cos\theta_{i,cK+k}`,
  then ArcFace on these class cosines.

**Precision.** The cosines, the margin and the cross-entropy are computed in float32 (float64
inputs stay float64) with autocast switched off inside, whatever the input dtype: float16 /
bfloat16 embeddings or weights (or a surrounding ``torch.autocast``) are cast up first. The
target cosine is clamped to :math:`[-1 + \epsilon, 1 - \epsilon]` before the square root, so
neither :math:`\sin\theta` nor its gradient is ever NaN/inf. A zero embedding (or weight row)
has cosine 0 with every class and gets a zero gradient (:func:`unit_rows`).

**Edge cases.** Labels must be class indices in ``[0, C)`` (else a one-line
:class:`~deepmetric.errors.InputError`); an empty batch gives 0, connected to the graph.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from deepmetric.errors import InputError
from deepmetric.functional.classification import check_class_labels

#: default clamp of the target cosine away from +-1 before the square root (float32-safe)
COS_EPS = 1e-6


def compute_dtype(*tensors: Tensor) -> torch.dtype:
    """float64 if any tensor is float64, else float32 (half and bfloat16 are cast up)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _no_autocast(device: torch.device) -> torch.autocast:
    return torch.autocast(device_type=device.type, enabled=False)


def unit_rows(t: Tensor, eps: float = 1e-12) -> Tensor:
    r"""Rows scaled to unit L2 norm; a row of norm :math:`\le` ``eps`` becomes 0 with a ZERO
    gradient (``F.normalize`` would give it a gradient of size :math:`1/\epsilon`, which
    overflows once cast back to float16)."""
    norm = torch.linalg.vector_norm(t, dim=1, keepdim=True)
    ok = norm > eps
    inverse = torch.where(ok, 1.0 / torch.where(ok, norm, torch.ones_like(norm)), torch.zeros_like(norm))
    return t * inverse


def normalized_cosines(embeddings: Tensor, weight: Tensor) -> Tensor:
    r"""N x R cosines :math:`\hat f_i \cdot \hat w_r` in float32 (float64 for float64 input).

    Inputs are cast up and normalised with autocast off, so the result is accurate under
    ``torch.autocast`` and for float16 / bfloat16 tensors. A zero row gives cosines 0 and
    receives a zero gradient (:func:`unit_rows`).
    """
    dtype = compute_dtype(embeddings, weight)
    with _no_autocast(embeddings.device):
        return unit_rows(embeddings.to(dtype)) @ unit_rows(weight.to(dtype)).T


def subcenter_cosines(cos: Tensor, num_classes: int, subcenters: int) -> Tensor:
    r"""N x C class cosines :math:`\max_k \cos\theta_{i,cK+k}` from N x (C K) sub-center cosines
    (rows of the weight are class-major: sub-center ``k`` of class ``c`` is row ``c * K + k``)."""
    if cos.shape[1] != num_classes * subcenters:
        raise InputError(
            f"sub-center cosines must have num_classes x subcenters = {num_classes} x {subcenters} "
            f"columns, got {cos.shape[1]}; pass a weight of {num_classes * subcenters} rows"
        )
    if subcenters == 1:
        return cos
    return cos.view(cos.shape[0], num_classes, subcenters).amax(dim=2)


def arcface_target(cos: Tensor, margin: float = 0.5, easy_margin: bool = False, eps: float = COS_EPS) -> Tensor:
    r"""The ArcFace target logit :math:`\phi(\cos\theta)` (before the scale), element-wise.

    :math:`\cos(\theta + m) = c \cos m - \sqrt{1 - c^2}\,\sin m` with :math:`c` clamped to
    :math:`[-1+\epsilon, 1-\epsilon]`; where :math:`\cos\theta \le \cos(\pi - m)` (i.e.
    :math:`\theta + m \ge \pi`) the linear fallback :math:`\cos\theta - m \sin m`; with
    ``easy_margin`` the margin only where :math:`\cos\theta > 0`, else :math:`\cos\theta`.
    """
    c = cos.clamp(-1.0 + eps, 1.0 - eps)
    sin = torch.sqrt(1.0 - c * c)
    phi = c * math.cos(margin) - sin * math.sin(margin)
    if easy_margin:
        return torch.where(cos > 0, phi, cos)
    return torch.where(cos > math.cos(math.pi - margin), phi, cos - margin * math.sin(margin))


def cosface_target(cos: Tensor, margin: float = 0.35) -> Tensor:
    r"""The CosFace target logit :math:`\cos\theta - m` (before the scale), element-wise."""
    return cos - margin


def margin_cross_entropy(
    cos: Tensor, labels: Tensor, target: Callable[[Tensor], Tensor], scale: float
) -> Tensor:
    r"""Mean cross-entropy of :math:`s \cdot \cos\theta` with the target entry of row ``i``
    replaced by :math:`s\,\phi(\cos\theta_{iy_i})` (``target`` is :math:`\phi`).

    ``cos`` is N x C (computed in float32 or float64); autocast is off inside.
    """
    check_class_labels(labels, cos.shape[1])
    if labels.numel() == 0:
        return cos.sum() * 0.0
    with _no_autocast(cos.device):
        index = labels.view(-1, 1).long()
        phi = target(cos.gather(1, index))
        logits = cos.scatter(1, index, phi) * scale
        return F.cross_entropy(logits, index.view(-1))


def arcface_loss(
    embeddings: Tensor,
    weight: Tensor,
    labels: Tensor,
    scale: float = 64.0,
    margin: float = 0.5,
    easy_margin: bool = False,
    eps: float = COS_EPS,
) -> Tensor:
    r"""ArcFace loss (see the module docstring) of N x D ``embeddings`` against C x D ``weight``.

    Args:
        embeddings: N x D (any float dtype; computed in float32).
        weight: C x D class weights (normalised inside).
        labels: N class indices in ``[0, C)``.
        scale: :math:`s` (paper: 64).
        margin: additive angular margin :math:`m` in RADIANS (paper: 0.5; PML's
            ``ArcFaceLoss(margin=28.6)`` takes degrees).
        easy_margin: apply the margin only where :math:`\cos\theta > 0`.
        eps: clamp of the target cosine before the square root.

    Returns:
        The mean cross-entropy (float32, or float64 for float64 input).
    """
    cos = normalized_cosines(embeddings, weight)
    return margin_cross_entropy(cos, labels, lambda c: arcface_target(c, margin, easy_margin, eps), scale)


def cosface_loss(
    embeddings: Tensor, weight: Tensor, labels: Tensor, scale: float = 64.0, margin: float = 0.35
) -> Tensor:
    r"""CosFace / AM-softmax loss: target logit :math:`s(\cos\theta_{y} - m)`, others
    :math:`s\cos\theta_c` (``weight`` C x D; margin in cosine units, as in PML)."""
    cos = normalized_cosines(embeddings, weight)
    return margin_cross_entropy(cos, labels, lambda c: cosface_target(c, margin), scale)


def subcenter_arcface_loss(
    embeddings: Tensor,
    weight: Tensor,
    labels: Tensor,
    num_classes: int,
    subcenters: int = 3,
    scale: float = 64.0,
    margin: float = 0.5,
    easy_margin: bool = False,
    eps: float = COS_EPS,
) -> Tensor:
    r"""Sub-center ArcFace: ArcFace on :math:`\cos\theta_{ic} = \max_k \cos\theta_{i,cK+k}`.

    ``weight`` is (C K) x D, class-major (sub-center ``k`` of class ``c`` is row ``c K + k``,
    the layout of PML's ``SubCenterArcFaceLoss`` transposed). The other arguments are those of
    :func:`arcface_loss`.
    """
    cos = subcenter_cosines(normalized_cosines(embeddings, weight), num_classes, subcenters)
    return margin_cross_entropy(cos, labels, lambda c: arcface_target(c, margin, easy_margin, eps), scale)


__all__ = [
    "COS_EPS",
    "arcface_loss",
    "arcface_target",
    "compute_dtype",
    "cosface_loss",
    "cosface_target",
    "margin_cross_entropy",
    "normalized_cosines",
    "subcenter_arcface_loss",
    "subcenter_cosines",
    "unit_rows",
]
