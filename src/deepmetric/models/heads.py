"""Embedding heads: the small layer between pooled backbone features and the embedding."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from deepmetric.errors import ConfigError


class LinearHead(nn.Module):
    """``e = W dropout(f) + b``: a linear projection of pooled features to ``out_dim``.

    Args:
        in_dim: pooled feature size.
        out_dim: embedding size.
        dropout: dropout probability applied to the features before the projection.
    """

    def __init__(self, in_dim: int, out_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        if out_dim < 1:
            raise ConfigError(f"embedding_dim must be >= 1, got {out_dim}; use None for no head")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(in_dim, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.dropout(x))


class L2Normalize(nn.Module):
    """``x / max(||x||_2, eps)`` along the last dimension: embeddings on the unit sphere."""

    def __init__(self, eps: float = 1e-12) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(x, p=2.0, dim=-1, eps=self.eps)
