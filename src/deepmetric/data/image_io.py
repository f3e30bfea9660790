"""Reading images: every failure names the file and says what to do; every pixel format decoded right.

:func:`to_mode` brings any decoded image to the model's mode (``RGB``, or ``L`` for 1-channel
models) the same way for training, evaluation and search:

* EXIF orientation is applied (a phone photo stored sideways is seen upright);
* 16-bit and 32-bit grey (``I;16``, ``I;16B``, ``I``, ``F``) is scaled to 8 bits (value / 257, the
  16-bit range; a plain conversion would clip everything above 255 to white);
* transparency (``RGBA``, ``LA``, ``PA``, a palette with a transparent colour) is composited over
  white (what a viewer shows), never dropped to whatever colour the hidden pixels hold;
* palette, CMYK, 1-bit and YCbCr images are converted by Pillow.

A missing, empty or undecodable image raises :class:`~deepmetric.errors.DataError` when it is
read. Datasets built with ``skip_bad=True`` instead check every file once at construction
(:func:`drop_unreadable`), leave the bad ones out with a warning and count them.
"""

from __future__ import annotations

import io
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from deepmetric.errors import DataError

#: file extensions treated as images when scanning folders (lower case)
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

_DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def is_image_file(path: str | Path) -> bool:
    """Whether ``path`` has an image extension."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


_WIDE_GREY = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
_ALPHA = ("RGBA", "LA", "PA", "RGBa", "La")


def _wide_grey_to_8bit(image: Image.Image) -> Image.Image:
    """16/32-bit grey -> 8-bit ``L``: value / 257 (65535 -> 255), rounded and clipped."""
    values = np.asarray(image, dtype=np.float64)
    if image.mode == "F" and values.size and float(np.nanmax(values)) <= 1.0:
        values = values * 65535.0  # floats in [0, 1]
    return Image.fromarray(np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8), "L")


def to_mode(image: Image.Image, mode: str = "RGB") -> Image.Image:
    """``image`` upright and in ``mode`` (see the module docstring for each pixel format)."""
    image = ImageOps.exif_transpose(image)
    if image.mode in _WIDE_GREY:
        image = _wide_grey_to_8bit(image)
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in _ALPHA:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba).convert("RGB")
    return image if image.mode == mode else image.convert(mode)


def decode_image(data: bytes, name: str, mode: str = "RGB") -> Image.Image:
    """Decode image ``data`` (named ``name`` in errors) and convert it to ``mode``."""
    if len(data) == 0:
        raise DataError(
            f"image {name} is empty (0 bytes); replace or delete it, or set data.params.skip_bad=true to leave "
            "unreadable images out"
        )
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return to_mode(image, mode)
    except _DECODE_ERRORS as exc:
        reason = " ".join(str(exc).split())[:160]  # no memory addresses or multi-line text
        reason = re.sub(r" at 0x[0-9a-fA-F]+", "", reason)
        raise DataError(
            f"image {name} cannot be decoded ({type(exc).__name__}: {reason}); replace or delete it, or set "
            "data.params.skip_bad=true to leave unreadable images out"
        ) from None


def load_image(path: str | Path, mode: str = "RGB") -> Image.Image:
    """Read the image at ``path`` and convert it to ``mode`` (RGB by default: grey becomes 3 channels)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise DataError(f"image {path} does not exist; check the dataset root and file list") from exc
    except OSError as exc:
        raise DataError(f"image {path} cannot be read ({exc}); check its permissions") from exc
    return decode_image(data, str(path), mode)


def image_problem(path: str | Path) -> str | None:
    """``None`` if ``path`` decodes as an image, else a short description of the problem."""
    try:
        load_image(path)
    except DataError as exc:
        return str(exc)
    return None


def drop_unreadable(paths: Sequence[str | Path], *columns: Sequence) -> tuple[list, ...]:
    """Remove the items whose image cannot be read, warning once with the count and examples.

    Returns ``(kept_indices, kept_paths, *kept_columns)``: each column (labels, flags, ...) is
    filtered alongside ``paths``.
    """
    keep: list[int] = []
    bad: list[str] = []
    for i, path in enumerate(paths):
        if image_problem(path) is None:
            keep.append(i)
        else:
            bad.append(str(path))
    if bad:
        examples = ", ".join(bad[:3]) + (", ..." if len(bad) > 3 else "")
        print(f"warning: skipped {len(bad)} unreadable image(s) of {len(paths)} (missing, empty or corrupt): "
              f"{examples}", file=sys.stderr)
    return (keep, [paths[i] for i in keep], *([column[i] for i in keep] for column in columns))
