"""Reading images: every failure names the file and says what to do.

A missing, empty or undecodable image raises :class:`~deepmetric.errors.DataError` when it is
read. Datasets built with ``skip_bad=True`` instead check every file once at construction
(:func:`drop_unreadable`), leave the bad ones out with a warning and count them.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from deepmetric.errors import DataError

#: file extensions treated as images when scanning folders (lower case)
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

_DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def is_image_file(path: str | Path) -> bool:
    """Whether ``path`` has an image extension."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def decode_image(data: bytes, name: str, mode: str = "RGB") -> Image.Image:
    """Decode image ``data`` (named ``name`` in errors) and convert it to ``mode``."""
    if len(data) == 0:
        raise DataError(f"image {name} is empty (0 bytes); replace or delete it, or pass skip_bad=True")
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.convert(mode)
    except _DECODE_ERRORS as exc:
        raise DataError(
            f"image {name} cannot be decoded ({type(exc).__name__}: {exc}); replace or delete it, or pass "
            "skip_bad=True to leave unreadable images out"
        ) from exc


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
        warnings.warn(
            f"skipped {len(bad)} unreadable image(s) of {len(paths)} (missing, empty or corrupt): {examples}",
            stacklevel=3,
        )
    return (keep, [paths[i] for i in keep], *([column[i] for i in keep] for column in columns))
