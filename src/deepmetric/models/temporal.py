"""The tracklet (video) model: a frame embedder and temporal pooling, with named outputs.

Temporal pooling of frame embeddings into one tracklet embedding (:class:`TemporalPooling`):

* ``mean``: the average of the valid frames' embeddings (invariant to frame order).
* ``attention``: a learned per-frame quality score q_t = w . f_t + b, weights softmax(q) over
  the valid frames, pooled feature sum_t softmax(q)_t f_t -- the attention-weighted temporal
  pooling of the OSM+CAA paper's video re-ID experiments (Wang et al., AAAI 2019, section on
  MARS), where low-quality frames (occlusion, blur) learn low scores.

:class:`TrackletModel` (``model.name: tracklet``, built by :func:`create_tracklet_model`) is a
:class:`~deepmetric.models.contracts.MultiOutputModel`::

    forward(clips (B, T, C, H, W), mask (B, T) bool | None)
        -> {"frame": (B, T, D), "tracklet": (B, D), "embedding": the tracklet embedding}

``output_dims = {"frame": D, "tracklet": D}``: with ``loss.heads`` each output gets its own loss
(:class:`~deepmetric.losses.multi_output.MultiOutputLoss`), the frame output labelled by each
clip's identity repeated T times. Only the VALID frames (``mask``; all frames without one) go
through the frame network -- they are flattened, embedded in one pass (or in chunks of
``frame_batch`` frames in evaluation) and scattered back -- so the padding of a batch of
variable-length test tracklets costs no compute; padded rows of ``"frame"`` are zeros and carry
no pooling weight. Training clips are never padded (fixed T).

Frames reach the model as tensors normalised by its ``train_transform()`` / ``eval_transform()``
(:class:`~deepmetric.data.tracklets.FrameNormalize` with the backbone's mean and std); the
resizing and the re-ID augmentation belong to the data (``data.params`` height, width, hflip,
pad; see :mod:`deepmetric.data.tracklets`), so the model takes no ``image_size``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepmetric.data.tracklets import FrameNormalize
from deepmetric.errors import ConfigError, InputError
from deepmetric.models.contracts import EMBEDDING

__all__ = ["FRAME", "TRACKLET", "TEMPORAL_MODES", "TemporalPooling", "TrackletModel", "create_tracklet_model"]

#: the named outputs trained by a loss each
FRAME, TRACKLET = "frame", "tracklet"
TEMPORAL_MODES = ("mean", "attention")


class TemporalPooling(nn.Module):
    """``forward(frames (B, T, D), mask (B, T) | None) -> (B, D)``."""

    def __init__(self, dim: int, mode: str = "mean") -> None:
        super().__init__()
        if mode not in TEMPORAL_MODES:
            raise ConfigError(f"temporal pooling must be 'mean' or 'attention', got '{mode}'; set model.params.temporal")
        self.mode = mode
        self.quality = nn.Linear(dim, 1) if mode == "attention" else None

    def frame_weights(self, frames: Tensor, mask: Tensor | None = None) -> Tensor:
        """Pooling weights ``(B, T)`` over frames (zero on padded frames, each row sums to 1)."""
        b, t, _ = frames.shape
        mask = torch.ones(b, t, dtype=torch.bool, device=frames.device) if mask is None else mask
        if self.quality is None:
            scores = torch.zeros(b, t, dtype=frames.dtype, device=frames.device)
        else:
            scores = self.quality(frames).squeeze(-1)
        return torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=1)

    def forward(self, frames: Tensor, mask: Tensor | None = None) -> Tensor:
        return (self.frame_weights(frames, mask).unsqueeze(-1) * frames).sum(dim=1)


class TrackletModel(nn.Module):
    """``frame_model`` (images ``(N, C, H, W)`` -> ``(N, embedding_dim)``) + temporal pooling.

    Args:
        frame_model: the frame embedder; its ``mean`` / ``std`` (if any) normalise the frames,
            its ``backbone_parameters()`` (if any) get the backbone learning rate.
        embedding_dim: size of the frame embeddings (and so of the tracklet embedding).
        temporal: ``"mean"`` or ``"attention"`` pooling.
        normalize: L2-normalise the tracklet embedding.
        frame_batch: in evaluation, embed at most this many frames per pass (None = all valid
            frames of the batch at once); training always embeds a batch in one pass.
    """

    def __init__(
        self, frame_model: nn.Module, embedding_dim: int, temporal: str = "attention", normalize: bool = True,
        frame_batch: int | None = None,
    ) -> None:
        super().__init__()
        if frame_batch is not None and frame_batch < 1:
            raise ConfigError(f"model.params.frame_batch must be >= 1 or null, got {frame_batch}")
        self.frame_model = frame_model
        self.pool = TemporalPooling(embedding_dim, temporal)
        self.normalize = bool(normalize)
        self.frame_batch = frame_batch
        self.embedding_dim = int(embedding_dim)
        self.output_dims: dict[str, int] = {FRAME: self.embedding_dim, TRACKLET: self.embedding_dim}

    # ------------------------------------------------------------------ forward
    def embed_frames(self, frames: Tensor) -> Tensor:
        """``(N, C, H, W) -> (N, D)``, in chunks of ``frame_batch`` frames in evaluation."""
        if self.training or self.frame_batch is None or frames.shape[0] <= self.frame_batch:
            return self.frame_model(frames)
        return torch.cat([self.frame_model(frames[s:s + self.frame_batch])
                          for s in range(0, frames.shape[0], self.frame_batch)])

    def forward(self, clips: Tensor, mask: Tensor | None = None) -> dict[str, Tensor]:
        """Named outputs of a batch of clips (see the module docstring)."""
        if clips.dim() != 5:
            raise InputError(f"clips must be (batch, frames, channels, height, width), got {tuple(clips.shape)}")
        b, t = clips.shape[:2]
        flat = clips.flatten(0, 1)
        if mask is None:
            frames = self.embed_frames(flat).reshape(b, t, -1)
        else:
            if mask.shape != (b, t):
                raise InputError(f"mask must be (batch, frames) = {(b, t)}, got {tuple(mask.shape)}")
            valid = mask.reshape(-1).to(clips.device)
            if not bool(mask.any(dim=1).all()):
                raise InputError("every tracklet needs at least one valid frame; a mask row is all False")
            embedded = self.embed_frames(flat[valid])
            index = torch.nonzero(valid).squeeze(1)
            frames = embedded.new_zeros(b * t, embedded.shape[1]).index_copy(0, index, embedded).reshape(b, t, -1)
        pooled = self.pool(frames, None if mask is None else mask.to(clips.device))
        tracklet = F.normalize(pooled, dim=1) if self.normalize else pooled
        return {FRAME: frames, TRACKLET: tracklet, EMBEDDING: tracklet}

    # ------------------------------------------------------------------ parameter groups
    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        """The frame model's backbone parameters (none if it does not name any)."""
        if hasattr(self.frame_model, "backbone_parameters"):
            return iter(list(self.frame_model.backbone_parameters()))
        return iter(())

    def head_parameters(self) -> Iterator[nn.Parameter]:
        """Everything else: the frame head(s) and the temporal attention."""
        backbone = {id(p) for p in self.backbone_parameters()}
        return iter([p for p in self.parameters() if id(p) not in backbone])

    # ------------------------------------------------------------------ transforms
    def _normalize(self, train: bool) -> FrameNormalize:
        mean = tuple(float(v) for v in getattr(self.frame_model, "mean", (0.0, 0.0, 0.0)))
        std = tuple(float(v) for v in getattr(self.frame_model, "std", (1.0, 1.0, 1.0)))
        return FrameNormalize(mean, std, train=train)

    def train_transform(self) -> FrameNormalize:
        """Frame -> normalised tensor, marked as the training transform (the loader adds the
        resizing and the re-ID augmentation)."""
        return self._normalize(True)

    def eval_transform(self) -> FrameNormalize:
        """Frame -> normalised tensor, marked as the evaluation transform."""
        return self._normalize(False)

    def extra_repr(self) -> str:
        return f"temporal={self.pool.mode!r}, normalize={self.normalize}, frame_batch={self.frame_batch}"


def create_tracklet_model(
    backbone: str = "tf_efficientnet_lite0",
    pretrained: bool | str | Path = "offline",
    embedding_dim: int = 128,
    pooling: str = "avg",
    normalize: bool = True,
    in_chans: int = 3,
    dropout: float = 0.0,
    freeze_bn: bool = False,
    temporal: str = "attention",
    frame_batch: int | None = None,
) -> TrackletModel:
    """``model.name: tracklet``: a :func:`~deepmetric.models.create_embedder` frame network
    (L2-normalised frame embeddings when ``normalize``) and ``temporal`` pooling
    (``model.params.temporal: mean | attention``; ``model.params.frame_batch`` bounds the frames
    per evaluation pass)."""
    from deepmetric.models import create_embedder

    frame = create_embedder(
        backbone, pretrained=pretrained, embedding_dim=embedding_dim, pooling=pooling, normalize=normalize,
        in_chans=in_chans, dropout=dropout, freeze_bn=freeze_bn,
    )
    return TrackletModel(frame, frame.embedding_dim, temporal=temporal, normalize=normalize, frame_batch=frame_batch)
