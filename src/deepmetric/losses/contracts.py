"""What a loss offers beyond ``loss(outputs, labels) -> scalar``, declared, never guessed.

Consumers (evaluation protocols, the trainer) check these contracts with ``isinstance``; a loss
states what it offers by implementing the methods, and whether the part is actually trained
(a classifier whose cross-entropy weight is 0 is random and must not predict):

* :class:`ClassifierLoss` -- owns a classifier head: ``logits(embeddings) -> N x C`` and
  ``classifier_trained() -> bool`` (its cross-entropy term has a weight > 0);
* :class:`CenterLoss` -- owns class centers: ``predict_nearest_center(embeddings) -> N`` and
  ``centers_trained() -> bool``;
* :class:`LossWrapper` -- wraps other losses (Hybrid, Symmetrical Synthesis, one loss per named
  output): ``wrapped_losses() -> list of losses``.

:func:`loss_parts` walks a loss and the losses it wraps, outside in; :func:`find_classifier` and
:func:`find_centers` return the first trained part that offers a classifier / centers.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor, nn

__all__ = ["CenterLoss", "ClassifierLoss", "LossWrapper", "find_centers", "find_classifier", "loss_parts"]


@runtime_checkable
class ClassifierLoss(Protocol):
    """A loss that owns a classifier head (the weight of its cross-entropy term is ``ce_weight``)."""

    def logits(self, embeddings: Tensor) -> Tensor:
        """N x C class scores."""
        ...

    def classifier_trained(self) -> bool:
        """True when training moves the classifier (its cross-entropy weight is > 0)."""
        ...


@runtime_checkable
class CenterLoss(Protocol):
    """A loss that owns one learned center per class."""

    def predict_nearest_center(self, embeddings: Tensor) -> Tensor:
        """The class of the nearest center, per row."""
        ...

    def centers_trained(self) -> bool:
        """True when training moves the centers."""
        ...


@runtime_checkable
class LossWrapper(Protocol):
    """A loss built around other losses."""

    def wrapped_losses(self) -> list[nn.Module]:
        """The wrapped losses, outermost first."""
        ...


def loss_parts(loss: nn.Module) -> list[nn.Module]:
    """``loss`` and every loss it wraps (depth first, outside in)."""
    parts = [loss]
    if isinstance(loss, LossWrapper):
        for inner in loss.wrapped_losses():
            parts += loss_parts(inner)
    return parts


def find_classifier(loss: nn.Module) -> ClassifierLoss | None:
    """The first part of ``loss`` with a TRAINED classifier head, or None."""
    for part in loss_parts(loss):
        if isinstance(part, ClassifierLoss) and part.classifier_trained():
            return part
    return None


def find_centers(loss: nn.Module) -> CenterLoss | None:
    """The first part of ``loss`` with TRAINED class centers, or None."""
    for part in loss_parts(loss):
        if isinstance(part, CenterLoss) and part.centers_trained():
            return part
    return None
