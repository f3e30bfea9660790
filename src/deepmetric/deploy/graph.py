"""The exported computation: a trained model reduced to its evaluation embedding.

:func:`embedding_graph` wraps a model in the module that both :class:`deepmetric.deploy.Embedder`
calls and every export format traces, so the two compute the same thing by construction:

* :class:`ImageGraph` -- ``forward(images (B, C, H, W)) -> (B, D)``;
* :class:`AudioGraph` -- ``forward(features (B, frames, n_mels), lengths (B,) int64) -> (B, D)``.

For a :class:`~deepmetric.models.contracts.MultiOutputModel` only the ``"embedding"`` output is
returned (:func:`~deepmetric.models.contracts.embedding_of`). :func:`input_kind_of` tells the two
apart: the audio model (:class:`~deepmetric.models.audio.UtteranceEmbedder`) takes features,
any model with an image ``input_size`` ``(C, H, W)`` takes images; other models (e.g. the
tracklet model, which takes clips and a frame mask) are not supported yet.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from deepmetric.deploy.manifest import InputKind, TensorSpec
from deepmetric.errors import InputError
from deepmetric.models.contracts import embedding_of

__all__ = [
    "AudioGraph",
    "ImageGraph",
    "embedding_graph",
    "example_inputs",
    "input_kind_of",
    "input_specs",
    "output_specs",
    "run_graph",
]


class ImageGraph(nn.Module):
    """``images (B, C, H, W) -> embeddings (B, D)`` of ``model`` (its ``"embedding"`` output)."""

    input_names = ("images",)

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> Tensor:
        return embedding_of(self.model, self.model(images))


class AudioGraph(nn.Module):
    """``features (B, T, n_mels), lengths (B,) -> embeddings (B, D)`` of an audio model."""

    input_names = ("features", "lengths")

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: Tensor, lengths: Tensor) -> Tensor:
        return embedding_of(self.model, self.model(features, lengths))


def input_kind_of(model: nn.Module) -> InputKind:
    """``"audio_features"`` for the audio model, ``"image"`` for a model with an image
    ``input_size``; anything else is an :class:`InputError`."""
    from deepmetric.models.audio import UtteranceEmbedder

    if isinstance(model, UtteranceEmbedder):
        return "audio_features"
    size = getattr(model, "input_size", None)
    if isinstance(size, (tuple, list)) and len(size) == 3 and callable(getattr(model, "eval_transform", None)):
        return "image"
    raise InputError(
        f"cannot tell what {type(model).__name__} takes as input; deployment supports image models "
        "(with input_size (C, H, W) and eval_transform()) and the audio model audio_cnn"
    )


def embedding_graph(model: nn.Module) -> ImageGraph | AudioGraph:
    """The :class:`ImageGraph` or :class:`AudioGraph` of ``model`` (see :func:`input_kind_of`)."""
    return AudioGraph(model) if input_kind_of(model) == "audio_features" else ImageGraph(model)


def _image_size(graph: nn.Module) -> tuple[int, int, int]:
    c, h, w = (int(v) for v in graph.model.input_size)
    return c, h, w


def example_inputs(graph: nn.Module, batch: int, frames: int = 23, seed: int = 0) -> tuple[Tensor, ...]:
    """Random inputs of ``batch`` items for ``graph`` (audio: ``frames`` frames; the utterances
    have different lengths, the first one full)."""
    gen = torch.Generator().manual_seed(seed)
    if isinstance(graph, AudioGraph):
        n_mels = int(graph.model.n_mels)
        features = torch.randn(batch, frames, n_mels, generator=gen)
        lengths = torch.randint(max(1, frames // 3), frames + 1, (batch,), generator=gen)
        lengths[0] = frames
        for row, n in enumerate(lengths.tolist()):
            features[row, n:] = 0.0
        return features, lengths.to(torch.long)
    return (torch.randn(batch, *_image_size(graph), generator=gen),)


def input_specs(graph: nn.Module, batch: int | None) -> list[TensorSpec]:
    """Names, shapes and dtypes of ``graph``'s inputs; ``batch=None`` names the batch axis."""
    b: int | str = "batch" if batch is None else int(batch)
    if isinstance(graph, AudioGraph):
        return [TensorSpec(name="features", shape=[b, "frames", int(graph.model.n_mels)], dtype="float32"),
                TensorSpec(name="lengths", shape=[b], dtype="int64")]
    return [TensorSpec(name="images", shape=[b, *_image_size(graph)], dtype="float32")]


def output_specs(embedding_dim: int, batch: int | None) -> list[TensorSpec]:
    """The one output, ``embedding (batch, D)``."""
    return [TensorSpec(name="embedding", shape=["batch" if batch is None else int(batch), int(embedding_dim)],
                       dtype="float32")]


def run_graph(graph: nn.Module, inputs: tuple[Tensor, ...]) -> Any:
    """``graph(*inputs)`` in inference mode, as float32 numpy."""
    with torch.inference_mode():
        return graph(*inputs).float().cpu().numpy()
