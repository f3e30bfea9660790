"""What a model offers: one embedding tensor, or named outputs.

* A plain model's ``forward(inputs) -> Tensor`` is the N x D embedding (train and eval alike).
* A :class:`MultiOutputModel` returns named outputs ``{name: Tensor}`` in train AND eval mode.
  The output named :data:`EMBEDDING` is what evaluation, search and export use; every other name
  in ``output_dims`` is trained by its own loss (``loss.heads`` weights them). An output of shape
  ``(B, D)`` is labelled by the batch labels; one of shape ``(B, T, D)`` (e.g. the frames of a
  tracklet) by each item's label repeated T times.

A model with a pretrained part declares it with :class:`HasBackbone` (``backbone_parameters()``),
so the optimizer can give it its own, smaller learning rate.

Consumers use :func:`embedding_of` and ``isinstance``; nobody looks for attribute names.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Protocol, runtime_checkable

from torch import Tensor, nn

from deepmetric.errors import InputError

__all__ = ["EMBEDDING", "HasBackbone", "MultiOutputModel", "embedding_of", "trained_outputs"]

#: the named output that evaluation and deployment use
EMBEDDING = "embedding"


@runtime_checkable
class MultiOutputModel(Protocol):
    """A model whose forward returns ``{name: Tensor}`` (always with :data:`EMBEDDING`)."""

    #: ``{output name: embedding size}`` of the outputs trained by a loss each
    output_dims: Mapping[str, int]

    def forward(self, *inputs: Any) -> dict[str, Tensor]: ...


@runtime_checkable
class HasBackbone(Protocol):
    """A model whose (pretrained) backbone is a declared subset of its parameters."""

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        """The backbone's parameters (everything else of the model is the head)."""
        ...


def trained_outputs(model: nn.Module) -> dict[str, int] | None:
    """``output_dims`` of a :class:`MultiOutputModel`, None for a one-tensor model."""
    return dict(model.output_dims) if isinstance(model, MultiOutputModel) else None


def embedding_of(model: nn.Module, outputs: Tensor | Mapping[str, Tensor]) -> Tensor:
    """The evaluation embedding among ``model``'s ``outputs``."""
    if isinstance(model, MultiOutputModel):
        if not isinstance(outputs, Mapping) or EMBEDDING not in outputs:
            raise InputError(
                f"{type(model).__name__} declares named outputs but did not return '{EMBEDDING}'; "
                "its forward must return a dict with an 'embedding' entry"
            )
        return outputs[EMBEDDING]
    if not isinstance(outputs, Tensor):
        raise InputError(
            f"{type(model).__name__} returned {type(outputs).__name__}; a model returns one embedding "
            "tensor, or declares output_dims and returns named outputs"
        )
    return outputs
