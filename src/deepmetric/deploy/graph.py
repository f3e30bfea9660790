"""The exported computation: a trained model reduced to its evaluation embedding.

:func:`embedding_graph` wraps a model in the module that both :class:`deepmetric.deploy.Embedder`
calls and every export format traces, so the two compute the same thing by construction:

* :class:`ImageGraph` -- ``forward(images (B, C, H, W)) -> (B, D)``;
* :class:`AudioGraph` -- ``forward(features (B, frames, n_mels), lengths (B,) int64) -> (B, D)``;
* :class:`TrackletGraph` -- ``forward(clips (B, T, C, H, W), mask (B, T) bool) -> (B, D)``: the
  video re-ID model (``model.name: tracklet``) on a batch of clips zero-padded to ``T`` frames,
  ``mask`` True on the real frames, exactly as its evaluation batches them
  (:func:`deepmetric.data.tracklets.pad_tracklets`).

For a :class:`~deepmetric.models.contracts.MultiOutputModel` only the ``"embedding"`` output is
returned (:func:`~deepmetric.models.contracts.embedding_of`). :func:`input_kind_of` tells them
apart: the audio model (:class:`~deepmetric.models.audio.UtteranceEmbedder`) takes features, the
tracklet model (:class:`~deepmetric.models.temporal.TrackletModel`) takes clips and a frame mask,
any other model with an image ``input_size`` ``(C, H, W)`` takes images.

Graphs with a frame axis name it in ``frame_axes`` (input name -> axis); exporters make it dynamic
(at least ``min_frames`` frames). Run eagerly (the :class:`~deepmetric.deploy.Embedder`), the
tracklet graph calls the model's own forward, which embeds only the valid frames; while it is
traced or exported it takes a static route every format can capture -- all ``B x T`` frames
through the frame network in one pass, padded ones then zeroed and given no pooling weight --
which computes the same embedding (each export checks this, and that padding is ignored:
:mod:`deepmetric.deploy.export`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepmetric.deploy.manifest import InputKind, TensorSpec
from deepmetric.errors import InputError
from deepmetric.models.contracts import embedding_of

__all__ = [
    "AudioGraph",
    "ImageGraph",
    "TrackletGraph",
    "default_frames",
    "embedding_graph",
    "example_inputs",
    "input_kind_of",
    "input_specs",
    "output_specs",
    "run_graph",
    "unpadded_embeddings",
]


class ImageGraph(nn.Module):
    """``images (B, C, H, W) -> embeddings (B, D)`` of ``model`` (its ``"embedding"`` output)."""

    input_names: ClassVar[tuple[str, ...]] = ("images",)
    frame_axes: ClassVar[dict[str, int]] = {}
    min_frames: ClassVar[int] = 1

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> Tensor:
        return embedding_of(self.model, self.model(images))


class AudioGraph(nn.Module):
    """``features (B, T, n_mels), lengths (B,) -> embeddings (B, D)`` of an audio model."""

    input_names: ClassVar[tuple[str, ...]] = ("features", "lengths")
    frame_axes: ClassVar[dict[str, int]] = {"features": 1}
    #: one frame would be specialised by the pooling layers
    min_frames: ClassVar[int] = 2

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: Tensor, lengths: Tensor) -> Tensor:
        return embedding_of(self.model, self.model(features, lengths))


def _capturing() -> bool:
    """Whether the running forward is being traced (TorchScript, ONNX) or captured (torch.export,
    torch.compile) rather than run eagerly."""
    exporting = getattr(torch.compiler, "is_exporting", None)
    return bool(torch.jit.is_tracing() or torch.compiler.is_compiling() or (exporting is not None and exporting()))


class TrackletGraph(nn.Module):
    """``clips (B, T, C, H, W), mask (B, T) -> embeddings (B, D)`` of the tracklet model: its
    ``"embedding"`` output, the temporal pooling of the valid frames (see the module docstring).

    ``mask`` is bool (True = a real frame) or numeric (nonzero = a real frame); every clip needs
    at least one real frame. ``frame_size`` ``(C, H, W)`` is the size the run's data gives each
    frame (``data.params`` height and width); it shapes :func:`example_inputs` and
    :func:`input_specs`, the network itself takes any frame size its backbone takes.
    """

    input_names: ClassVar[tuple[str, ...]] = ("clips", "mask")
    frame_axes: ClassVar[dict[str, int]] = {"clips": 1, "mask": 1}
    min_frames: ClassVar[int] = 1

    def __init__(self, model: nn.Module, frame_size: tuple[int, int, int]) -> None:
        super().__init__()
        self.model = model
        self.frame_size = tuple(int(v) for v in frame_size)

    def forward(self, clips: Tensor, mask: Tensor) -> Tensor:
        valid = mask if mask.dtype == torch.bool else mask != 0
        if not _capturing():
            return embedding_of(self.model, self.model(clips, valid))
        # the static route: no data-dependent shapes, so every exporter keeps B and T dynamic
        b, t = clips.shape[0], clips.shape[1]
        frames = self.model.frame_model(clips.flatten(0, 1))
        frames = frames.reshape(b, t, frames.shape[-1])
        frames = torch.where(valid.unsqueeze(-1), frames, torch.zeros_like(frames))
        pooled = self.model.pool(frames, valid)
        return F.normalize(pooled, dim=1) if self.model.normalize else pooled


def input_kind_of(model: nn.Module) -> InputKind:
    """``"audio_features"`` for the audio model, ``"tracklet"`` for the tracklet model, ``"image"``
    for a model with an image ``input_size``; anything else is an :class:`InputError`."""
    from deepmetric.models.audio import UtteranceEmbedder
    from deepmetric.models.temporal import TrackletModel

    if isinstance(model, UtteranceEmbedder):
        return "audio_features"
    if isinstance(model, TrackletModel):
        return "tracklet"
    size = getattr(model, "input_size", None)
    if isinstance(size, (tuple, list)) and len(size) == 3 and callable(getattr(model, "eval_transform", None)):
        return "image"
    raise InputError(
        f"cannot tell what {type(model).__name__} takes as input; deployment supports image models "
        "(with input_size (C, H, W) and eval_transform()), the audio model audio_cnn and the video model tracklet"
    )


def embedding_graph(
    model: nn.Module, frame_size: tuple[int, int, int] | None = None
) -> ImageGraph | AudioGraph | TrackletGraph:
    """The :class:`ImageGraph`, :class:`AudioGraph` or :class:`TrackletGraph` of ``model`` (see
    :func:`input_kind_of`); a tracklet model needs ``frame_size`` ``(C, H, W)``."""
    kind = input_kind_of(model)
    if kind == "audio_features":
        return AudioGraph(model)
    if kind == "tracklet":
        if frame_size is None:
            raise InputError("the tracklet model's graph needs the frame size (C, H, W) its run's data gives frames")
        return TrackletGraph(model, frame_size)
    return ImageGraph(model)


def _image_size(graph: nn.Module) -> tuple[int, int, int]:
    if isinstance(graph, TrackletGraph):
        c, h, w = graph.frame_size
        return c, h, w
    c, h, w = (int(v) for v in graph.model.input_size)
    return c, h, w


def default_frames(graph: nn.Module) -> int:
    """Frames of an example input when none is asked for: 23 for audio, 4 for clips."""
    return 4 if isinstance(graph, TrackletGraph) else 23


def _lengths(batch: int, frames: int, low: int, gen: torch.Generator) -> Tensor:
    """Valid frames per row: the first row full, the others drawn from ``[low, frames]``."""
    lengths = torch.randint(low, frames + 1, (batch,), generator=gen)
    lengths[0] = frames
    return lengths.to(torch.long)


def example_inputs(graph: nn.Module, batch: int, frames: int | None = None, seed: int = 0) -> tuple[Tensor, ...]:
    """Random inputs of ``batch`` items for ``graph``. Audio: ``frames`` frames (default 23), the
    utterances of different lengths, the first one full, padding zero. Clips: ``frames`` frames
    (default 4), the first clip full, the others of 1 to ``frames`` real frames, padded frames
    zero and False in the mask (as :func:`deepmetric.data.tracklets.pad_tracklets` pads)."""
    gen = torch.Generator().manual_seed(seed)
    frames = default_frames(graph) if frames is None else int(frames)
    if isinstance(graph, AudioGraph):
        n_mels = int(graph.model.n_mels)
        features = torch.randn(batch, frames, n_mels, generator=gen)
        lengths = _lengths(batch, frames, max(1, frames // 3), gen)
        for row, n in enumerate(lengths.tolist()):
            features[row, n:] = 0.0
        return features, lengths
    if isinstance(graph, TrackletGraph):
        clips = torch.randn(batch, frames, *_image_size(graph), generator=gen)
        mask = torch.arange(frames).unsqueeze(0) < _lengths(batch, frames, 1, gen).unsqueeze(1)
        clips[~mask] = 0.0
        return clips, mask
    return (torch.randn(batch, *_image_size(graph), generator=gen),)


def input_specs(graph: nn.Module, batch: int | None) -> list[TensorSpec]:
    """Names, shapes and dtypes of ``graph``'s inputs; ``batch=None`` names the batch axis
    (``"frames"`` names the frame axis of audio features and of clips and their mask)."""
    b: int | str = "batch" if batch is None else int(batch)
    if isinstance(graph, AudioGraph):
        return [TensorSpec(name="features", shape=[b, "frames", int(graph.model.n_mels)], dtype="float32"),
                TensorSpec(name="lengths", shape=[b], dtype="int64")]
    if isinstance(graph, TrackletGraph):
        return [TensorSpec(name="clips", shape=[b, "frames", *_image_size(graph)], dtype="float32"),
                TensorSpec(name="mask", shape=[b, "frames"], dtype="bool")]
    return [TensorSpec(name="images", shape=[b, *_image_size(graph)], dtype="float32")]


def output_specs(embedding_dim: int, batch: int | None) -> list[TensorSpec]:
    """The one output, ``embedding (batch, D)``."""
    return [TensorSpec(name="embedding", shape=["batch" if batch is None else int(batch), int(embedding_dim)],
                       dtype="float32")]


def run_graph(graph: nn.Module, inputs: tuple[Tensor, ...]) -> Any:
    """``graph(*inputs)`` in inference mode, as float32 numpy."""
    with torch.inference_mode():
        return graph(*inputs).float().cpu().numpy()


def unpadded_embeddings(graph: TrackletGraph, clips: Tensor, mask: Tensor) -> Any:
    """The embedding of each clip computed from its real frames alone -- the model's forward on
    ``clips[i, mask[i]]`` without padding or mask -- as float32 numpy ``(B, D)``: what the padded
    batch must give if padding is ignored."""
    valid = mask if mask.dtype == torch.bool else mask != 0
    rows = []
    with torch.inference_mode():
        for clip, keep in zip(clips, valid):
            out = graph.model(clip[keep].unsqueeze(0))
            rows.append(embedding_of(graph.model, out).float().cpu())
    return torch.cat(rows).numpy()
