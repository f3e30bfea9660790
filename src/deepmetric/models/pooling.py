"""Global pooling of a backbone's feature map into one vector per image.

Every pooling here maps a feature map ``(B, C, H, W)`` -- or a token sequence ``(B, N, C)``, as
vision transformers return -- to ``(B, C)``:

* ``avg``: the mean over positions, ``f_c = (1/|X|) sum_x x_c``.
* ``max``: the maximum over positions, ``f_c = max_x x_c`` (R-MAC's building block, Tolias et
  al. 2016, "Particular object retrieval with integral max-pooling of CNN activations").
* ``gem``: generalized mean (Radenovic, Tolias & Chum 2018, "Fine-tuning CNN Image Retrieval
  with No Human Annotation", TPAMI), ``f_c = ((1/|X|) sum_x x_c^p)^(1/p)`` with a learnable
  exponent ``p``: ``p = 1`` is average pooling and ``p -> inf`` tends to max pooling. Inputs are
  clamped to ``eps`` first, so GeM assumes non-negative activations (CNN feature maps after a
  ReLU-type activation), not signed transformer tokens.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from deepmetric.errors import ConfigError, InputError, unknown_name_message


def _positions_last(x: Tensor) -> Tensor:
    """Reshape ``(B, C, H, W)`` or ``(B, N, C)`` to ``(B, C, positions)``."""
    if x.dim() == 4:
        return x.flatten(2)
    if x.dim() == 3:
        return x.transpose(1, 2)
    raise InputError(
        f"pooling expects a (B, C, H, W) feature map or a (B, N, C) token sequence, got shape "
        f"{tuple(x.shape)}; pass the backbone's forward_features output"
    )


class AvgPool(nn.Module):
    """Average over all spatial positions (or tokens)."""

    def forward(self, x: Tensor) -> Tensor:
        return _positions_last(x).mean(dim=-1)


class MaxPool(nn.Module):
    """Maximum over all spatial positions (or tokens)."""

    def forward(self, x: Tensor) -> Tensor:
        return _positions_last(x).amax(dim=-1)


class GeM(nn.Module):
    """Generalized-mean pooling ``((1/|X|) sum_x clamp(x, eps)^p)^(1/p)`` with learnable ``p``.

    Args:
        p: initial exponent (3.0 as in Radenovic et al. 2018); must be >= 1.
        eps: lower clamp that keeps ``x^p`` and its gradient finite.
        learnable: whether ``p`` is a trainable parameter.
    """

    def __init__(self, p: float = 3.0, eps: float = 1e-6, learnable: bool = True) -> None:
        super().__init__()
        if p < 1:
            raise ConfigError(f"GeM exponent p must be >= 1 (1 = average pooling), got {p}")
        self.eps = eps
        self.p = nn.Parameter(torch.tensor(float(p)), requires_grad=learnable)

    def forward(self, x: Tensor) -> Tensor:
        x = _positions_last(x)
        p = self.p.to(dtype=x.dtype)
        return x.clamp(min=self.eps).pow(p).mean(dim=-1).pow(1.0 / p)

    def extra_repr(self) -> str:
        return f"p={float(self.p.detach()):.4g}, eps={self.eps}"


POOLINGS: dict[str, type[nn.Module]] = {"avg": AvgPool, "max": MaxPool, "gem": GeM}


def build_pooling(name: str, **kwargs: float) -> nn.Module:
    """The pooling module called ``name`` (``"avg"``, ``"max"`` or ``"gem"``)."""
    if name not in POOLINGS:
        raise ConfigError(unknown_name_message("pooling", name, POOLINGS))
    return POOLINGS[name](**kwargs)
