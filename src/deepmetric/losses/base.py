"""Base classes shared by every loss.

* :class:`MetricLoss` -- ``loss(embeddings, labels) -> scalar``; validates its input.
* :class:`PairLoss` -- a metric loss that is a pure function of ONE N x M pair matrix plus the
  positive/negative masks (``matrix_loss``). Mining, soft weighting and symmetrical synthesis
  transform that matrix or its masks, so they compose with every pair loss.
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from deepmetric.functional.distances import is_similarity, pairwise_matrix
from deepmetric.functional.masks import label_masks
from deepmetric.functional.validation import check_embeddings


class MetricLoss(nn.Module):
    """``forward(embeddings (N x D), labels (N,)) -> scalar``.

    Subclasses implement :meth:`compute`. Losses with parameters of their own (classifier
    weights, proxies, centers) register them as submodules/parameters so that ``.parameters()``
    hands them to the optimizer.
    """

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:  # noqa: D401
        check_embeddings(embeddings, labels)
        return self.compute(embeddings, labels)

    def compute(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        raise NotImplementedError


class PairLoss(MetricLoss):
    """A loss defined on one pair matrix (distances or similarities) plus label masks.

    ``metric`` is the pair matrix the loss's formula is written in: ``"euclidean"`` distances
    or ``"cosine"``/``"dot"`` similarities. ``matrix_loss(matrix, pos_mask, neg_mask)`` is the
    loss as a pure function of it; ``forward`` builds the matrix and masks from a batch.
    """

    metric: ClassVar[str] = "euclidean"
    #: use Euclidean distances with the hand-written backward pass (same values, one matrix
    #: product less; no second derivative): set by losses whose matrix_loss is closed-form too
    closed_form_distances: ClassVar[bool] = False
    #: True when a subclass overrides ``compute`` only to compute the same value as
    #: ``matrix_loss(pair_matrix(x), masks) + regularizer(x)`` more cheaply (wrappers such as
    #: symmetrical synthesis may then call ``matrix_loss`` directly)
    compute_is_matrix_loss: ClassVar[bool] = False

    @property
    def higher_is_closer(self) -> bool:
        """True if the matrix holds similarities (larger = closer), False for distances."""
        return is_similarity(self.metric)

    def pair_matrix(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """The loss's pair matrix of ``x`` against ``y`` (or against itself)."""
        if self.closed_form_distances and self.metric == "euclidean":
            from deepmetric.functional.closed_form import euclidean_distances_closed_form

            return euclidean_distances_closed_form(x, y)
        return pairwise_matrix(x, y, self.metric)

    def compute(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        matrix = self.pair_matrix(embeddings)
        pos_mask, neg_mask = label_masks(labels)
        return self.matrix_loss(matrix, pos_mask, neg_mask) + self.regularizer(embeddings)

    def matrix_loss(self, matrix: Tensor, pos_mask: Tensor, neg_mask: Tensor) -> Tensor:
        raise NotImplementedError

    def regularizer(self, embeddings: Tensor) -> Tensor | float:
        """An extra term on the raw embeddings (e.g. N-pair's L2 penalty); 0 by default."""
        return 0.0
