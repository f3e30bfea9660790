"""Raw items -> decoded images or waveforms, with one-line errors naming a wrong item's type.

Images (:func:`as_image`), brought to the model's mode by :func:`deepmetric.data.image_io.to_mode`
exactly as training and evaluation read files (EXIF orientation, 16-bit grey, transparency):

* a path (``str`` or ``os.PathLike``): read with :func:`deepmetric.data.image_io.load_image`;
* a PIL image;
* a numpy array of ``uint8`` pixels, ``H x W`` (grey) or ``H x W x C`` with C in 1, 3, 4;
* a tensor ``C x H x W`` (C in 1, 3, 4) or ``H x W``: ``uint8`` pixels, or floats in [0, 1]
  (``torchvision.transforms.ToTensor``'s output), which are rounded to 8-bit pixels first.

Clips of the tracklet model (:func:`as_clip`, then :func:`as_frame` for each frame): a list or
tuple of frames -- each a path, a PIL image, a uint8 array or a tensor as above -- or all frames in
one ``T x H x W x C`` uint8 array or ``T x C x H x W`` tensor. Frames are decoded as the tracklet
datasets decode them (:func:`deepmetric.data.tracklets.load_frame`: a plain RGB conversion), so a
clip embeds as its frames embedded in evaluation. An empty clip is an error.

Audio (:func:`as_waveform`): a path to an audio file (read with
:func:`deepmetric.data.audio_io.load_wav` and resampled to the model's rate), or a 1-D float
waveform (numpy array or tensor, values in [-1, 1]) already at the model's sample rate; ``int16``
arrays are scaled by 1/32768 like 16-bit WAV files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from deepmetric.data.image_io import load_image, to_mode
from deepmetric.errors import InputError

__all__ = ["CLIP_ITEMS", "IMAGE_ITEMS", "WAVEFORM_ITEMS", "as_clip", "as_frame", "as_image", "as_waveform", "type_name"]

IMAGE_ITEMS = "PIL images, image file paths, H x W x C uint8 numpy arrays or C x H x W tensors"
CLIP_ITEMS = (
    "clips: lists of frames (PIL images, image file paths, H x W x C uint8 numpy arrays or C x H x W tensors), "
    "or T x H x W x C uint8 arrays or T x C x H x W tensors of frames"
)
WAVEFORM_ITEMS = "audio file paths, or 1-D float waveforms (numpy arrays or tensors) at the model's sample rate"


def type_name(item: Any) -> str:
    """``numpy.ndarray``, ``builtins.int`` ...: the qualified type of ``item`` for error messages."""
    kind = type(item)
    return f"{kind.__module__}.{kind.__qualname__}"


def _is_path(item: Any) -> bool:
    return isinstance(item, (str, os.PathLike))


def _pixels(array: np.ndarray, name: str) -> Image.Image:
    """``H x W`` or ``H x W x C`` uint8 pixels -> a PIL image (grey, RGB or RGBA)."""
    if array.dtype != np.uint8:
        raise InputError(
            f"{name} is a numpy array of dtype {array.dtype}; pass uint8 pixels (0..255), "
            "e.g. np.asarray(pil_image) or (array * 255).round().astype(np.uint8)"
        )
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        return Image.fromarray(np.ascontiguousarray(array), "L")
    if array.ndim == 3 and array.shape[2] in (3, 4):
        return Image.fromarray(np.ascontiguousarray(array), "RGB" if array.shape[2] == 3 else "RGBA")
    raise InputError(
        f"{name} is a numpy array of shape {tuple(array.shape)}; pass an image as H x W x C pixels "
        "(C = 1, 3 or 4) or H x W grey pixels"
    )


def _tensor_pixels(tensor: Tensor, name: str) -> Image.Image:
    """A ``C x H x W`` (or ``H x W``) tensor -> a PIL image, through 8-bit pixels."""
    if tensor.dim() == 3 and tensor.shape[0] in (1, 3, 4):
        tensor = tensor.permute(1, 2, 0)
    elif tensor.dim() != 2:
        raise InputError(
            f"{name} is a tensor of shape {tuple(tensor.shape)}; pass an image as C x H x W "
            "(C = 1, 3 or 4) or H x W"
        )
    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.uint8:
        return _pixels(tensor.numpy(), name)
    if not tensor.is_floating_point():
        raise InputError(
            f"{name} is a tensor of dtype {tensor.dtype}; pass uint8 pixels or floats in [0, 1]"
        )
    pixels = (tensor.float() * 255.0).round().clamp(0, 255).to(torch.uint8)
    return _pixels(pixels.numpy(), name)


def as_image(item: Any, mode: str = "RGB", index: int = 0) -> Image.Image:
    """The image ``item`` (see the module docstring) in ``mode``; ``index`` names it in errors."""
    if _is_path(item):
        return load_image(Path(item), mode)
    if isinstance(item, Image.Image):
        return to_mode(item, mode)
    if isinstance(item, np.ndarray):
        return to_mode(_pixels(item, f"item {index}"), mode)
    if isinstance(item, Tensor):
        return to_mode(_tensor_pixels(item, f"item {index}"), mode)
    raise InputError(f"item {index} is a {type_name(item)}; an image model embeds {IMAGE_ITEMS}")


def as_clip(item: Any, index: int = 0) -> list[Any]:
    """The frames of clip ``item`` (see the module docstring), not yet decoded; ``index`` names it
    in errors. Only the clip's type and length are checked here."""
    if isinstance(item, (list, tuple)) or (isinstance(item, (np.ndarray, Tensor)) and item.ndim == 4):
        frames = list(item)
    elif isinstance(item, (np.ndarray, Tensor)):
        raise InputError(
            f"item {index} is a {type_name(item)} of shape {tuple(item.shape)}; a tracklet model embeds {CLIP_ITEMS} "
            "(wrap a single frame as a clip: [frame])"
        )
    else:
        raise InputError(
            f"item {index} is a {type_name(item)}; a tracklet model embeds {CLIP_ITEMS} "
            "(wrap a single clip: embed([clip]))"
        )
    if not frames:
        raise InputError(f"item {index} is an empty clip; pass at least one frame")
    return frames


def as_frame(frame: Any, index: int = 0, position: int = 0) -> Image.Image:
    """Frame ``position`` of clip ``index`` as an RGB PIL image, decoded as the tracklet datasets
    decode frames (see the module docstring)."""
    from deepmetric.data.tracklets import load_frame

    name = f"item {index} frame {position}"
    if _is_path(frame):
        if not Path(frame).is_file():
            raise InputError(f"{name}: image {frame} does not exist; pass existing image files")
        return load_frame(Path(frame))
    if isinstance(frame, Image.Image):
        return load_frame(frame)
    if isinstance(frame, np.ndarray):
        return _pixels(frame, name).convert("RGB")
    if isinstance(frame, Tensor):
        return _tensor_pixels(frame, name).convert("RGB")
    raise InputError(f"{name} is a {type_name(frame)}; a clip's frames are {IMAGE_ITEMS}")


def as_waveform(item: Any, sample_rate: int | None, index: int = 0) -> Tensor:
    """The mono float32 waveform ``(samples,)`` of ``item`` (see the module docstring)."""
    if _is_path(item):
        from deepmetric.data.audio_io import load_wav

        if sample_rate is None:
            raise InputError(
                "the run's data loader declares no sample_rate, so audio files cannot be resampled for it; "
                "pass log-mel features (frames x n_mels tensors) instead"
            )
        waveform, _ = load_wav(Path(item), sample_rate)
        return waveform
    if isinstance(item, np.ndarray):
        if item.dtype == np.int16:
            item = item.astype(np.float32) / 32768.0
        elif not np.issubdtype(item.dtype, np.floating):
            raise InputError(f"item {index} is a numpy array of dtype {item.dtype}; pass a float waveform in [-1, 1]")
        item = torch.from_numpy(np.ascontiguousarray(item, dtype=np.float32))
    if isinstance(item, Tensor):
        if item.dim() != 1:
            raise InputError(
                f"item {index} has shape {tuple(item.shape)}; pass a mono waveform of shape (samples,) "
                "(average the channels first)"
            )
        if not item.is_floating_point():
            raise InputError(f"item {index} is a tensor of dtype {item.dtype}; pass a float waveform in [-1, 1]")
        if item.numel() == 0:
            raise InputError(f"item {index} is an empty waveform; pass at least one sample")
        return item.detach().cpu().float()
    raise InputError(f"item {index} is a {type_name(item)}; an audio model embeds {WAVEFORM_ITEMS}")
