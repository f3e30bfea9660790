r"""Where a CNN looks: Grad-CAM heat maps (Selvaraju et al., ICCV 2017).

For a target class c with score :math:`y^c` and feature maps :math:`A^k` of a chosen layer,
weights :math:`\alpha_k = \frac{1}{HW} \sum_{i,j} \partial y^c / \partial A^k_{ij}` and the map
:math:`\mathrm{ReLU}(\sum_k \alpha_k A^k)`, upsampled to the image and scaled to [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def grad_cam(
    model: nn.Module,
    layer: nn.Module,
    images: Tensor,
    score_fn: Callable[[Tensor], Tensor],
    target: Tensor | None = None,
) -> Tensor:
    """Grad-CAM maps ``(B, H, W)`` in [0, 1] for ``images (B, C, H, W)``.

    ``score_fn`` maps the model output to class scores ``(B, classes)`` (e.g. a loss-owned
    classifier applied to the embeddings); ``target`` picks the class per image (default: the
    predicted class). ``layer`` is the module whose output feature maps are explained.
    """
    stored: dict[str, Tensor] = {}

    def hook(_: nn.Module, __: tuple, output: Tensor) -> None:
        output.retain_grad()
        stored["maps"] = output

    handle = layer.register_forward_hook(hook)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            scores = score_fn(model(images.requires_grad_(True)))
            target = scores.argmax(dim=1) if target is None else target
            scores.gather(1, target.view(-1, 1)).sum().backward()
    finally:
        handle.remove()
        model.train(was_training)
    maps, grads = stored["maps"], stored["maps"].grad
    cam = F.relu((grads.mean(dim=(2, 3), keepdim=True) * maps).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False).squeeze(1)
    peak = cam.flatten(1).amax(dim=1).clamp_min(1e-12)
    return (cam / peak[:, None, None]).detach()
