r"""Classifier losses on embeddings: cosine (normalised-softmax) logits and cross-entropy.

Normalised softmax: Zhai & Wu, "Classification is a Strong Baseline for Deep Metric Learning",
BMVC 2019 (arXiv 1811.12649); Wang, Xiang, Cheng, Yuille, "NormFace: L2 Hypersphere Embedding
for Face Verification", ACM MM 2017 (arXiv 1704.06369).

.. math::

    z_{ic} = \frac{\cos(f_i, w_c)}{T}, \qquad
    L = -\frac{1}{N} \sum_i \log \frac{e^{z_{i y_i}}}{\sum_c e^{z_{ic}}}
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from deepmetric.errors import InputError
from deepmetric.functional.distances import cosine_similarity_matrix


def check_class_labels(labels: Tensor, num_classes: int) -> None:
    """Raise :class:`InputError` unless every label is a class index in ``[0, num_classes)``."""
    if labels.numel() == 0:
        return
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
        raise InputError(
            f"labels must be class indices in [0, {num_classes}) for a loss with "
            f"num_classes={num_classes}, got labels in [{low}, {high}]; remap the labels to "
            f"0..C-1 or set num_classes to at least {high + 1}"
        )


def cosine_logits(embeddings: Tensor, weights: Tensor, temperature: float = 1.0) -> Tensor:
    r"""N x C logits :math:`\cos(f_i, w_c) / T` of embeddings against class weight rows (C x D)."""
    return cosine_similarity_matrix(embeddings, weights) / temperature


def normalized_softmax_loss(
    embeddings: Tensor, weights: Tensor, labels: Tensor, temperature: float = 0.05
) -> Tensor:
    r"""Cross-entropy over cosine logits :math:`\cos(f_i, w_c)/T` (mean over the batch).

    Args:
        embeddings: N x D embeddings (normalised inside; a zero row gives zero logits).
        weights: C x D class weights, one row per class.
        labels: N class indices in ``[0, C)``.
        temperature: :math:`T` (Zhai & Wu: 0.05).

    Returns:
        The mean cross-entropy; an empty batch gives 0.
    """
    check_class_labels(labels, weights.shape[0])
    logits = cosine_logits(embeddings, weights, temperature)
    if labels.numel() == 0:
        return logits.sum() * 0.0
    return F.cross_entropy(logits, labels)


def classifier_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy of N x C ``logits``, with a clear error for out-of-range labels."""
    check_class_labels(labels, logits.shape[1])
    if labels.numel() == 0:
        return logits.sum() * 0.0
    return F.cross_entropy(logits, labels)


__all__ = [
    "check_class_labels",
    "classifier_cross_entropy",
    "cosine_logits",
    "normalized_softmax_loss",
]
