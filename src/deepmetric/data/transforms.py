"""Image transforms for training and evaluation (torchvision), built from a backbone's data config.

* Training: random resized crop to the input size (area scale ``(0.16, 1)``, the range used by
  Musgrave et al. 2020, "A Metric Learning Reality Check"), optional horizontal flip, tensor,
  normalisation.
* Evaluation: resize the shorter side to ``size / crop_pct`` (256 for 224 at timm's usual 0.875),
  center crop to the input size, tensor, normalisation.

Both first convert the PIL image to the channel count the model expects (grey images become
3 identical channels for RGB backbones), so grey and colour images mix freely.
"""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image
from torchvision import transforms as T

from deepmetric.errors import ConfigError

_INTERPOLATIONS = {
    "bilinear": T.InterpolationMode.BILINEAR,
    "bicubic": T.InterpolationMode.BICUBIC,
    "nearest": T.InterpolationMode.NEAREST,
}


class ToMode:
    """Convert a PIL image to ``"RGB"`` (3 channels) or ``"L"`` (1 channel); picklable for workers."""

    def __init__(self, channels: int = 3) -> None:
        if channels not in (1, 3):
            raise ConfigError(
                f"image transforms support 1 or 3 input channels, got {channels}; write a custom "
                "transform for other channel counts"
            )
        self.mode = "RGB" if channels == 3 else "L"

    def __call__(self, image: Image.Image) -> Image.Image:
        return image if image.mode == self.mode else image.convert(self.mode)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mode={self.mode!r})"


def _interpolation(name: str) -> T.InterpolationMode:
    if name not in _INTERPOLATIONS:
        raise ConfigError(f"unknown interpolation '{name}'; use one of {', '.join(_INTERPOLATIONS)}")
    return _INTERPOLATIONS[name]


def _check_size(input_size: Sequence[int]) -> tuple[int, int, int]:
    if len(input_size) != 3 or min(input_size) < 1:
        raise ConfigError(f"input_size must be (channels, height, width), got {tuple(input_size)}")
    c, h, w = (int(v) for v in input_size)
    return c, h, w


def build_train_transform(
    input_size: Sequence[int],
    mean: Sequence[float],
    std: Sequence[float],
    interpolation: str = "bicubic",
    scale: tuple[float, float] = (0.16, 1.0),
    hflip: float = 0.5,
) -> T.Compose:
    """Random resized crop to ``input_size`` (C, H, W), flip with probability ``hflip``, normalise."""
    c, h, w = _check_size(input_size)
    if not 0.0 < scale[0] <= scale[1] <= 1.0:
        raise ConfigError(f"scale must satisfy 0 < low <= high <= 1, got {scale}")
    steps: list = [ToMode(c), T.RandomResizedCrop((h, w), scale=scale, interpolation=_interpolation(interpolation))]
    if hflip > 0:
        steps.append(T.RandomHorizontalFlip(hflip))
    steps += [T.ToTensor(), T.Normalize(list(mean)[:c], list(std)[:c])]
    return T.Compose(steps)


def build_eval_transform(
    input_size: Sequence[int],
    mean: Sequence[float],
    std: Sequence[float],
    interpolation: str = "bicubic",
    crop_pct: float = 0.875,
) -> T.Compose:
    """Resize to ``size / crop_pct``, center crop to ``input_size`` (C, H, W), normalise."""
    c, h, w = _check_size(input_size)
    if not 0.0 < crop_pct <= 1.0:
        raise ConfigError(f"crop_pct must be in (0, 1], got {crop_pct}")
    resize = (round(h / crop_pct), round(w / crop_pct)) if h != w else round(h / crop_pct)
    return T.Compose(
        [
            ToMode(c),
            T.Resize(resize, interpolation=_interpolation(interpolation)),
            T.CenterCrop((h, w)),
            T.ToTensor(),
            T.Normalize(list(mean)[:c], list(std)[:c]),
        ]
    )


def to_tensor_transform(channels: int = 3) -> T.Compose:
    """Minimal transform: convert mode and make a float tensor in [0, 1] (no resizing)."""
    return T.Compose([ToMode(channels), T.ToTensor()])
