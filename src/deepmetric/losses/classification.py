r"""Classifier losses: normalised softmax, and a classifier's cross-entropy added to any metric loss.

* :class:`NormalizedSoftmaxLoss` -- cross-entropy over cosine logits (Zhai & Wu, BMVC 2019;
  NormFace, Wang et al., ACM MM 2017).
* :class:`Hybrid` -- ``metric_loss(e, y) + ce_weight * CE(classifier(e), y)``, the joint
  metric + classification objective of OSM+CAA, DeMAL-CNN and the center-based methods.
* :func:`predict` -- class predictions from anything exposing ``logits(embeddings)``.
"""

from __future__ import annotations

import math


import torch
from torch import Tensor, nn

from deepmetric.errors import ConfigError, InputError
from deepmetric.functional.classification import (
    classifier_cross_entropy,
    cosine_logits,
    normalized_softmax_loss,
)
from deepmetric.losses.base import MetricLoss
from deepmetric.losses.contracts import ClassifierLoss
from deepmetric.losses.proxy_anchor import check_sizes


class NormalizedSoftmaxLoss(MetricLoss):
    r"""Cross-entropy over cosine logits :math:`z_{ic} = \cos(f_i, w_c) / T`.

    .. math::

        L = -\frac{1}{N} \sum_i \log \frac{e^{\cos(f_i, w_{y_i}) / T}}{\sum_c e^{\cos(f_i, w_c) / T}}

    Zhai & Wu, "Classification is a Strong Baseline for Deep Metric Learning", BMVC 2019
    (arXiv 1811.12649); Wang, Xiang, Cheng, Yuille, "NormFace", ACM MM 2017 (arXiv 1704.06369).

    Args:
        num_classes: number of training classes C (labels must be in ``[0, C)``).
        embedding_dim: embedding size D.
        temperature: :math:`T` (> 0), default 0.05 (Zhai & Wu).

    ``weight`` (C x D) is an ``nn.Parameter`` whose rows start with norm close to 1 (normal,
    std :math:`1/\sqrt{D}`), so an optimizer step moves the class directions by a similar angle
    whatever D is. An empty batch gives 0.
    """

    def __init__(self, num_classes: int, embedding_dim: int, temperature: float = 0.05) -> None:
        super().__init__()
        check_sizes("normalized_softmax", num_classes, embedding_dim)
        if temperature <= 0:
            raise ConfigError(
                f"normalized_softmax temperature must be > 0, got {temperature}; use 0.05 "
                "(Zhai & Wu)"
            )
        self.num_classes = num_classes
        self.embedding_dim = embedding_dim
        self.temperature = float(temperature)
        self.weight = nn.Parameter(torch.randn(num_classes, embedding_dim) / math.sqrt(embedding_dim))

    def logits(self, embeddings: Tensor) -> Tensor:
        """N x C logits :math:`\\cos(f_i, w_c) / T`."""
        return cosine_logits(embeddings, self.weight, self.temperature)

    def classifier_trained(self) -> bool:
        """Always: the loss is the classifier's cross-entropy."""
        return True

    def compute(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        return normalized_softmax_loss(embeddings, self.weight, labels, self.temperature)

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, embedding_dim={self.embedding_dim}, "
            f"temperature={self.temperature}"
        )


class Hybrid(MetricLoss):
    r"""Any metric loss plus a classifier's cross-entropy on the same embeddings.

    .. math::

        L = L_{metric}(f, y) + \lambda_{CE} \cdot \mathrm{CE}(g(f), y)

    as in the hybrid objectives of OSM+CAA (Wang et al., AAAI 2019) and DeMAL-CNN (He et al.,
    2022). The module owns both parts, so ``.parameters()`` yields the metric loss's parameters
    (proxies, centers, ...) followed by the classifier's.

    Args:
        metric_loss: any ``loss(embeddings, labels) -> scalar`` module.
        classifier: a module mapping N x D embeddings to N x C logits. When ``None`` a
            ``nn.Linear(embedding_dim, num_classes)`` is built.
        ce_weight: :math:`\lambda_{CE}` (>= 0), default 1. With 0 the classifier is not run.
        num_classes, embedding_dim: sizes of the default linear classifier (needed only when
            ``classifier`` is ``None``).
    """

    def __init__(
        self,
        metric_loss: nn.Module,
        classifier: nn.Module | None = None,
        ce_weight: float = 1.0,
        num_classes: int | None = None,
        embedding_dim: int | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(metric_loss, nn.Module):
            raise ConfigError(
                f"Hybrid needs metric_loss as an nn.Module, got {type(metric_loss).__name__}; "
                "pass a loss such as deepmetric.losses.build_loss('triplet')"
            )
        if ce_weight < 0:
            raise ConfigError(f"Hybrid ce_weight must be >= 0, got {ce_weight}; use 1.0")
        if classifier is None:
            if num_classes is None or embedding_dim is None:
                raise ConfigError(
                    "Hybrid needs a classifier: pass classifier=<nn.Module mapping embeddings to "
                    "logits>, or pass both num_classes and embedding_dim to build a linear one"
                )
            check_sizes("Hybrid", num_classes, embedding_dim)
            classifier = nn.Linear(embedding_dim, num_classes)
        self.metric_loss = metric_loss
        self.classifier = classifier
        self.ce_weight = float(ce_weight)

    def logits(self, embeddings: Tensor) -> Tensor:
        """N x C class logits of the classifier."""
        out = self.classifier(embeddings)
        if out.dim() != 2 or out.shape[0] != embeddings.shape[0]:
            raise InputError(
                f"Hybrid's classifier must map N x D embeddings to N x C logits, got shape "
                f"{tuple(out.shape)} for {embeddings.shape[0]} embeddings; fix the classifier"
            )
        return out

    def classifier_trained(self) -> bool:
        """True when the cross-entropy term is on (``ce_weight > 0``)."""
        return self.ce_weight > 0

    def wrapped_losses(self) -> list[nn.Module]:
        return [self.metric_loss]

    def terms(self, embeddings: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """The unweighted parts: ``{"metric": ..., "ce": ...}`` (``ce`` absent if ce_weight = 0)."""
        parts = {"metric": self.metric_loss(embeddings, labels)}
        if self.ce_weight > 0:
            parts["ce"] = classifier_cross_entropy(self.logits(embeddings), labels)
        return parts

    def compute(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        parts = self.terms(embeddings, labels)
        if "ce" not in parts:
            return parts["metric"]
        return parts["metric"] + self.ce_weight * parts["ce"]

    def extra_repr(self) -> str:
        return f"ce_weight={self.ce_weight}"


@torch.no_grad()
def predict(scorer: ClassifierLoss, embeddings: Tensor) -> Tensor:
    """Predicted class index (N,) = argmax of ``scorer.logits(embeddings)``.

    ``scorer`` is any object with a ``logits`` method: :class:`Hybrid`,
    :class:`NormalizedSoftmaxLoss`, or :class:`~deepmetric.losses.proxy_anchor.ProxyAnchorLoss`
    (nearest proxy).
    """
    if not isinstance(scorer, ClassifierLoss):
        raise ConfigError(
            f"predict needs a loss that owns a classifier (logits and classifier_trained), got "
            f"{type(scorer).__name__}; pass a Hybrid, NormalizedSoftmaxLoss or ProxyAnchorLoss"
        )
    return scorer.logits(embeddings).argmax(dim=1)


__all__ = ["Hybrid", "NormalizedSoftmaxLoss", "predict"]
