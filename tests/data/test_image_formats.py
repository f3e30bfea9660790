"""Every pixel format decodes to what a viewer shows; references computed here with numpy."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepmetric.data.image_io import load_image
from deepmetric.errors import DataError


def saved(image: Image.Image, path: Path, **kwargs: object) -> Path:
    image.save(path, **kwargs)
    return path


def test_16_bit_grey_png_is_scaled_not_clipped_to_white(tmp_path: Path) -> None:
    ramp = (np.arange(64, dtype=np.uint32).reshape(8, 8) * 1000).astype(np.uint16)  # 0 .. 63000
    path = saved(Image.fromarray(ramp), tmp_path / "deep.png")
    got = np.asarray(load_image(path))
    expected = np.clip(np.rint(ramp / 257.0), 0, 255).astype(np.uint8)
    assert got.shape == (8, 8, 3)
    for c in range(3):
        assert np.array_equal(got[..., c], expected)
    assert got.max() < 255 and len(np.unique(got)) > 50  # a ramp, not a white square


def test_32_bit_int_grey_is_scaled_like_16_bit(tmp_path: Path) -> None:
    values = np.array([[0, 257, 65535, 30000]], dtype=np.int32)
    path = saved(Image.fromarray(values, "I"), tmp_path / "i32.tif")
    assert np.asarray(load_image(path, "L")).tolist() == [[0, 1, 255, round(30000 / 257)]]


def test_palette_with_transparency_and_alpha_composite_over_white(tmp_path: Path) -> None:
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (200, 0, 0, 255)   # opaque red
    rgba[0, 1] = (0, 0, 0, 0)       # fully transparent (hidden colour black)
    rgba[1, 0] = (0, 0, 200, 128)   # half-transparent blue
    rgba[1, 1] = (10, 20, 30, 255)
    path = saved(Image.fromarray(rgba, "RGBA"), tmp_path / "alpha.png")
    got = np.asarray(load_image(path)).astype(int)
    a = rgba[..., 3:4] / 255.0
    expected = np.rint(rgba[..., :3] * a + 255 * (1 - a)).astype(int)
    assert np.abs(got - expected).max() <= 1
    assert got[0, 1].tolist() == [255, 255, 255]  # transparent is white, not black

    la = np.stack([np.full((2, 2), 40, np.uint8), np.array([[255, 0], [255, 0]], np.uint8)], axis=-1)
    path = saved(Image.fromarray(la, "LA"), tmp_path / "la.png")
    assert np.asarray(load_image(path, "L")).tolist() == [[40, 255], [40, 255]]

    pal = Image.new("P", (2, 1))
    pal.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    pal.putdata([0, 1])
    path = saved(pal, tmp_path / "pal.png", transparency=1)
    assert np.asarray(load_image(path)).tolist() == [[[255, 0, 0], [255, 255, 255]]]


def test_cmyk_jpeg_and_one_bit_images(tmp_path: Path) -> None:
    cmyk = Image.new("CMYK", (4, 4), (0, 255, 255, 0))  # pure red in CMYK
    path = saved(cmyk, tmp_path / "cmyk.jpg", quality=100)
    got = np.asarray(load_image(path)).astype(int)
    assert got.shape == (4, 4, 3) and got[..., 0].min() > 200 and got[..., 1:].max() < 60
    bits = Image.new("1", (3, 1))
    bits.putdata([0, 1, 0])
    path = saved(bits, tmp_path / "bits.png")
    assert np.asarray(load_image(path, "L")).tolist() == [[0, 255, 0]]


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_rotation_is_applied(tmp_path: Path, orientation: int) -> None:
    pixels = np.zeros((2, 3, 3), np.uint8)
    pixels[0, 0] = (255, 0, 0)  # a red top-left corner marks the orientation
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = orientation
    path = saved(image, tmp_path / f"rot{orientation}.jpg", exif=exif, quality=100)
    got = np.asarray(load_image(path)).astype(int)
    turns = {3: 2, 6: 3, 8: 1}[orientation]  # EXIF 6 = rotate 90 degrees clockwise to view upright
    expected = np.rot90(pixels, k=turns)
    assert got.shape == expected.shape
    red = np.unravel_index(np.argmax(got[..., 0] - got[..., 1]), got.shape[:2])
    assert tuple(int(v) for v in red) == tuple(int(v) for v in np.argwhere(expected[..., 0] == 255)[0])


def test_undecodable_image_error_is_one_line_without_addresses(tmp_path: Path) -> None:
    path = tmp_path / "bad.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(DataError) as info:
        load_image(path)
    message = str(info.value)
    assert "\n" not in message and "0x" not in message and "skip_bad" in message
    assert "data.params.skip_bad=true" in message  # a config setting, not Python syntax
