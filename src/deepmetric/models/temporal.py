"""Temporal pooling of frame embeddings into one tracklet (video) embedding.

* ``mean``: the average of the valid frames' embeddings (invariant to frame order).
* ``attention``: a learned per-frame quality score q_t = w . f_t + b, weights softmax(q) over
  the valid frames, pooled feature sum_t softmax(q)_t f_t -- the attention-weighted temporal
  pooling of the OSM+CAA paper's video re-ID experiments (Wang et al., AAAI 2019, section on
  MARS), where low-quality frames (occlusion, blur) learn low scores.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class TemporalPooling(nn.Module):
    """``forward(frames (B, T, D), mask (B, T) | None) -> (B, D)``."""

    def __init__(self, dim: int, mode: str = "mean") -> None:
        super().__init__()
        if mode not in ("mean", "attention"):
            raise ValueError(f"temporal pooling mode must be 'mean' or 'attention', got '{mode}'")
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


class TrackletEmbedder(nn.Module):
    """Embeds every frame with ``frame_model`` then pools over time.

    ``forward(clips (B, T, C, H, W)) -> (tracklet (B, D), frames (B, T, D))``; the tracklet
    embedding is L2-normalised when ``normalize``. Train with a frame-level loss on ``frames``
    (labels repeated T times) and a tracklet-level loss on ``tracklet``.
    """

    def __init__(self, frame_model: nn.Module, dim: int, mode: str = "mean", normalize: bool = True) -> None:
        super().__init__()
        self.frame_model, self.pool, self.normalize = frame_model, TemporalPooling(dim, mode), normalize

    def forward(self, clips: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if clips.dim() != 5:
            raise ValueError(f"clips must be (batch, frames, channels, height, width), got {tuple(clips.shape)}")
        b, t = clips.shape[:2]
        frames = self.frame_model(clips.flatten(0, 1)).view(b, t, -1)
        pooled = self.pool(frames, mask)
        return (F.normalize(pooled, dim=1) if self.normalize else pooled), frames
