"""Mixed (channel + spatial) attention for CNN feature maps, insertable after backbone stages.

The block follows the mixed attention of DeMAL-CNN (He, Wang, Zhao, Yao, "Deep metric attention
learning for skin lesion classification in dermoscopy images", Complex & Intelligent Systems,
2022; reconstructed from its abstract, see METHODS.md section 5), which has the form of CBAM
(Woo, Park, Lee, Kweon, ECCV 2018):

* channel attention: :math:`M_c = \\sigma(\\mathrm{MLP}(\\mathrm{AvgPool}(F)) + \\mathrm{MLP}(\\mathrm{MaxPool}(F)))`,
  a shared two-layer MLP with hidden size C / reduction; :math:`F' = M_c \\odot F`;
* spatial attention: :math:`M_s = \\sigma(\\mathrm{conv}_{k \\times k}([\\mathrm{mean}_c F'; \\max_c F']))`;
  :math:`F'' = M_s \\odot F'`.

One deviation, for insertion into pretrained networks: each gate is :math:`2\\sigma(\\cdot)`
(range (0, 2)) and the last layer of each gate starts at zero, so a freshly inserted block is
the identity. Plain CBAM gates start near 0.5 each, which quarters the pretrained activations
after a block and, with frozen BatchNorm statistics downstream, can silence the features.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


class ChannelAttention(nn.Module):
    """Rescale channels by 2 sigmoid(MLP(avg-pool) + MLP(max-pool))."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels))
        nn.init.zeros_(self.mlp[2].weight)
        nn.init.zeros_(self.mlp[2].bias)
        self.last_map: Tensor | None = None

    def weights(self, x: Tensor) -> Tensor:
        """Channel weights ``(B, C)`` in (0, 2); exactly 1 at initialisation."""
        return 2.0 * torch.sigmoid(self.mlp(x.mean(dim=(2, 3))) + self.mlp(x.amax(dim=(2, 3))))

    def forward(self, x: Tensor) -> Tensor:
        w = self.weights(x)
        self.last_map = w.detach()
        return x * w[:, :, None, None]


class SpatialAttention(nn.Module):
    """Rescale positions by 2 sigmoid(conv_kxk([channel mean; channel max]))."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)
        self.last_map: Tensor | None = None

    def weights(self, x: Tensor) -> Tensor:
        """Spatial weights ``(B, 1, H, W)`` in (0, 2); exactly 1 at initialisation."""
        return 2.0 * torch.sigmoid(self.conv(torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)))

    def forward(self, x: Tensor) -> Tensor:
        w = self.weights(x)
        self.last_map = w.detach()
        return x * w


class MixedAttention(nn.Module):
    """Channel attention followed by spatial attention; ``last_spatial_map`` holds the most recent
    spatial weights (for heat maps)."""

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7) -> None:
        super().__init__()
        self.channel = ChannelAttention(channels, reduction)
        self.spatial = SpatialAttention(kernel_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.spatial(self.channel(x))

    @property
    def last_spatial_map(self) -> Tensor | None:
        return self.spatial.last_map


class _StageWithAttention(nn.Module):
    def __init__(self, stage: nn.Module, attention: MixedAttention) -> None:
        super().__init__()
        self.stage, self.attention = stage, attention

    def forward(self, x: Tensor) -> Tensor:
        return self.attention(self.stage(x))


def insert_mixed_attention(
    backbone: nn.Module, stages: Sequence[int] = (-2, -1), reduction: int = 16, kernel_size: int = 7
) -> list[MixedAttention]:
    """Insert a :class:`MixedAttention` after each chosen stage of a timm CNN, in place.

    ``stages`` index ``backbone.feature_info`` (timm's list of stages with their output channels;
    negative indices count from the last). Returns the inserted blocks.
    """
    info = getattr(backbone, "feature_info", None)
    if not info:
        raise ValueError("the backbone has no timm feature_info; mixed attention needs a timm CNN")
    entries = [dict(e) for e in info]
    blocks = []
    for index in sorted({s % len(entries) for s in stages}):
        path, channels = entries[index]["module"], int(entries[index]["num_chs"])
        parent_path, _, name = path.rpartition(".")
        parent = backbone.get_submodule(parent_path) if parent_path else backbone
        attention = MixedAttention(channels, reduction, kernel_size)
        parent._modules[name] = _StageWithAttention(parent._modules[name], attention)
        blocks.append(attention)
    return blocks
