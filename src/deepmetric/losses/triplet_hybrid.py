r"""Hybrid triplet + classification loss of a triplet network (DeMAL-CNN, He et al. 2022).

For a batch laid out as ``[anchors; positives; negatives]`` (B each, from
:class:`deepmetric.data.triplet_sampler.TripletBatchSampler`):

.. math::

    L = \frac{1}{B} \sum_i [d(a_i, p_i) - d(a_i, n_i) + m]_+
        + w_{CE} \cdot \frac{1}{3} \left( CE_a + CE_p + CE_n \right)

with Euclidean distances, margin m = 0.2 and the cross-entropy weight :math:`w_{CE}` = ``ce_weight`` = 1 by default (METHODS.md
section 5, a reconstruction from the abstract). One linear classifier, owned by the loss, is
shared by the three branches; predict with :meth:`TripletHybridLoss.logits`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepmetric.errors import ConfigError, InputError
from deepmetric.losses.base import MetricLoss


def explicit_triplet_loss(anchors: Tensor, positives: Tensor, negatives: Tensor, margin: float) -> Tensor:
    r"""Mean over i of :math:`[\|a_i - p_i\| - \|a_i - n_i\| + m]_+` (zero-safe norms)."""
    d_ap = torch.sqrt(((anchors - positives) ** 2).sum(dim=1) + 1e-12)
    d_an = torch.sqrt(((anchors - negatives) ** 2).sum(dim=1) + 1e-12)
    return F.relu(d_ap - d_an + margin).mean()


class TripletHybridLoss(MetricLoss):
    """Triplet loss on explicit (anchor, positive, negative) rows plus ``ce_weight`` x mean CE."""

    def __init__(self, num_classes: int, embedding_dim: int, margin: float = 0.2, ce_weight: float = 1.0) -> None:
        super().__init__()
        if ce_weight < 0:
            raise ConfigError(f"triplet_hybrid ce_weight must be >= 0, got {ce_weight}; use 1.0")
        self.classifier = nn.Linear(embedding_dim, num_classes)
        self.margin, self.ce_weight = margin, float(ce_weight)

    def logits(self, embeddings: Tensor) -> Tensor:
        """Class scores of the shared classifier."""
        return self.classifier(embeddings)

    def classifier_trained(self) -> bool:
        """True when the cross-entropy term is on (``ce_weight > 0``)."""
        return self.ce_weight > 0

    def compute(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        n = embeddings.shape[0]
        if n == 0 or n % 3:
            raise InputError(
                f"a triplet batch needs 3B rows laid out [anchors; positives; negatives], got {n}; "
                "draw batches with TripletBatchSampler"
            )
        b = n // 3
        la, lp, ln = labels[:b], labels[b:2 * b], labels[2 * b:]
        if not bool((la == lp).all()) or bool((la == ln).any()):
            raise InputError(
                "batch is not laid out as [anchors; positives; negatives] (positives must share the "
                "anchor's label, negatives must not); draw batches with TripletBatchSampler"
            )
        a, p, ng = embeddings[:b], embeddings[b:2 * b], embeddings[2 * b:]
        triplet = explicit_triplet_loss(a, p, ng, self.margin)
        # the mean of the three branch CEs equals the CE over all 3B rows (equal branch sizes)
        ce = F.cross_entropy(self.classifier(embeddings), labels)
        return triplet + self.ce_weight * ce
