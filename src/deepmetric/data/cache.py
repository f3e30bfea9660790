"""Decoded-image cache (``data.cache``): decode every image once, keep its pixels, augment from them.

Contract:

* :func:`attach_cache` decodes every item of the given image datasets once (``dataset.read(i)``,
  converted to the transform's mode), shrinks it so its shorter side is ``size`` pixels (never
  enlarged; ``size == 0`` keeps full resolution) with the transform's interpolation
  (``torchvision.transforms.functional.resize``, i.e. exactly what ``T.Resize(size)`` computes),
  and stores the uint8 pixels of all items in ONE flat buffer with an index (shape, offset and the
  decoded image's own size per item). Items are matched by ``dataset.paths``, so datasets holding
  the same files (the training split, its evaluation-transform copy, the test split) share rows.
* ``kind="memory"``: the buffer is a numpy array filled before any DataLoader starts, so forked
  worker processes share its pages copy-on-write (one buffer, no per-item Python objects).
  ``kind="disk"``: the buffer is a memory-mapped file ``<key>.u8`` plus ``<key>.json`` (the index)
  in ``folder``. ``key`` hashes the item paths, ``size``, mode and interpolation; the index also
  holds a signature of every source file's (mtime, size), so a later run or fold on the same files
  maps the file without decoding anything, and a changed file rebuilds it. Both files are written
  to temporaries and renamed (the index last), so a killed build leaves nothing that is read.
* Each dataset then reads items through :meth:`DatasetCache.item`: the cached pixels go through
  the dataset's own transform, random draws included, with one adaptation. A
  ``T.RandomResizedCrop`` draws its box for the image's ORIGINAL size (so it consumes the same
  random numbers and draws the same box as without the cache) and crops the same region, scaled,
  from the cached pixels (PIL ``resize`` with a fractional ``box``). When the cached image has
  the original size (``size == 0``, or an image already small enough) the transform runs
  unchanged, so cached and uncached items are bit-identical; a deterministic
  ``Resize(size) -> CenterCrop`` evaluation transform is bit-identical too when ``size`` equals
  its resize (see :func:`exact_for`). Other transforms placed before the crop see the cached
  (smaller) image.

Only :class:`~deepmetric.data.image_dataset.ImageDataset` loaders (folder, csv, omniglot,
olivetti, cub200, cars196, sop, inshop, ...) can be cached; :func:`check_cacheable` names the
problem and the fix for anything else. A disk cache needs every item to come from a file (or a
zip / npz container file) whose modification time identifies its content.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torchvision.transforms.functional as F
from PIL import Image
from torchvision import transforms as T

from deepmetric.atomic_io import atomic_write
from deepmetric.errors import ConfigError

__all__ = [
    "CACHE_FORMAT",
    "DatasetCache",
    "ImageCache",
    "attach_cache",
    "cache_interpolation",
    "check_cacheable",
    "default_cache_size",
    "exact_for",
    "cache_of",
    "transform_mode",
    "transform_resolution",
]

#: version of the on-disk layout; part of the key, so a new layout never reads an old file
CACHE_FORMAT = 1

CacheKind = Literal["memory", "disk"]

_PIL_RESAMPLE = {
    T.InterpolationMode.NEAREST: Image.Resampling.NEAREST,
    T.InterpolationMode.BILINEAR: Image.Resampling.BILINEAR,
    T.InterpolationMode.BICUBIC: Image.Resampling.BICUBIC,
    T.InterpolationMode.LANCZOS: Image.Resampling.LANCZOS,
    T.InterpolationMode.BOX: Image.Resampling.BOX,
    T.InterpolationMode.HAMMING: Image.Resampling.HAMMING,
}


# --------------------------------------------------------------------------------------------
# what the transforms say


def _steps(transform: Any) -> list[Any]:
    return list(transform.transforms) if isinstance(transform, T.Compose) else ([] if transform is None else [transform])


def transform_mode(transform: Any) -> str | None:
    """The PIL mode the transform's leading mode conversion produces (``ToMode``), if it has one."""
    steps = _steps(transform)
    mode = getattr(steps[0], "mode", None) if steps else None
    return mode if isinstance(mode, str) and mode in ("RGB", "L") else None


def transform_resolution(transform: Any) -> int | None:
    """The longer output side of the first ``RandomResizedCrop`` / ``Resize`` / ``CenterCrop``."""
    for step in _steps(transform):
        if isinstance(step, (T.RandomResizedCrop, T.CenterCrop)):
            return int(max(step.size))
        if isinstance(step, T.Resize):
            size = step.size
            return int(max(size) if isinstance(size, (list, tuple)) else size)
    return None


def default_cache_size(resolution: int) -> int:
    """8/7 of the training resolution (146 for 128, 256 for 224): room for crops, and exactly the
    ``Resize`` of timm's usual evaluation transform (``crop_pct`` 0.875)."""
    return int(round(resolution * 8 / 7))


def cache_interpolation(transform: Any) -> T.InterpolationMode:
    """The interpolation of the transform's first ``RandomResizedCrop`` / ``Resize`` (bicubic if none)."""
    for step in _steps(transform):
        if isinstance(step, (T.RandomResizedCrop, T.Resize)):
            return step.interpolation
    return T.InterpolationMode.BICUBIC


def exact_for(transform: Any, size: int, interpolation: T.InterpolationMode, mode: str | None) -> bool:
    """Whether ``transform`` gives the same pixels from a cache of shorter side ``size`` as from the
    decoded images: full resolution, or a leading (mode conversion then) ``Resize(size)`` with the
    cache's interpolation, which is then a no-op on the cached image."""
    steps = _steps(transform)
    if transform_mode(transform) != mode:
        return False
    if size == 0:
        return True
    rest = steps[1:] if mode is not None else steps
    if not rest or not isinstance(rest[0], T.Resize):
        return False
    resize = rest[0]
    wanted = resize.size if isinstance(resize.size, int) else (resize.size[0] if len(resize.size) == 1 else None)
    return wanted == size and resize.interpolation == interpolation and resize.max_size is None


def check_cacheable(dataset: Any, what: str) -> None:
    """Raise a one-line :class:`ConfigError` unless ``dataset`` is an image dataset the cache can serve."""
    from deepmetric.data.image_dataset import ImageDataset

    if not isinstance(dataset, ImageDataset):
        raise ConfigError(
            f"data.cache caches decoded images, but {what} is a {type(dataset).__name__}, not an image dataset "
            "(ImageDataset: folder, csv, omniglot, olivetti, cub200, cars196, sop, inshop, ...); set data.cache=none"
        )


# --------------------------------------------------------------------------------------------
# the cache


@dataclass(frozen=True)
class _Index:
    """Per row: pixel array shape (h, w, c), offset in the buffer, and the decoded image's (w, h)."""

    shapes: np.ndarray  # (n, 3) int64
    offsets: np.ndarray  # (n,) int64
    originals: np.ndarray  # (n, 2) int64

    @property
    def nbytes(self) -> int:
        return int(self.offsets[-1] + np.prod(self.shapes[-1])) if len(self.offsets) else 0

    @staticmethod
    def of(shapes: Sequence[tuple[int, ...]], originals: Sequence[tuple[int, int]]) -> _Index:
        table = np.asarray(shapes, dtype=np.int64).reshape(-1, 3)
        ends = np.cumsum(table.prod(axis=1))
        offsets = np.concatenate([[0], ends[:-1]]).astype(np.int64) if len(ends) else np.zeros(0, np.int64)
        return _Index(table, offsets, np.asarray(originals, dtype=np.int64).reshape(-1, 2))


class ImageCache:
    """uint8 pixels of ``len(paths)`` images in one flat buffer (RAM array or memory-mapped file)."""

    def __init__(self, buffer: np.ndarray, index: _Index, paths: Sequence[str], size: int,
                 kind: CacheKind, file: Path | None = None, seconds: float = 0.0, built: bool = True) -> None:
        self.buffer = buffer
        self.index = index
        self.paths = list(paths)
        self.row_of = {p: r for r, p in enumerate(self.paths)}
        self.size = size
        self.kind = kind
        self.file = file
        self.seconds = seconds  #: time spent building (or mapping) the cache
        self.built = built  #: False when an existing disk cache was reused

    def __len__(self) -> int:
        return len(self.paths)

    def __getstate__(self) -> dict[str, Any]:
        # spawned (not forked) loader workers: a disk cache travels as its file name, not its pixels
        state = dict(self.__dict__)
        if self.kind == "disk":
            state["buffer"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self.buffer is None:
            self.buffer = np.memmap(self.file, dtype=np.uint8, mode="r") if self.nbytes else np.zeros(0, np.uint8)

    @property
    def nbytes(self) -> int:
        return self.index.nbytes

    def pixels(self, row: int) -> np.ndarray:
        """The cached pixels of ``row`` as an (h, w, c) uint8 view (no copy)."""
        h, w, c = (int(v) for v in self.index.shapes[row])
        start = int(self.index.offsets[row])
        return self.buffer[start:start + h * w * c].reshape(h, w, c)

    def image(self, row: int) -> Image.Image:
        """The cached pixels of ``row`` as a PIL image (RGB, or L for one channel)."""
        array = self.pixels(row)
        return Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)

    def original_size(self, row: int) -> tuple[int, int]:
        """(width, height) of the decoded image before the cache shrank it."""
        w, h = self.index.originals[row]
        return int(w), int(h)

    def describe(self) -> str:
        where = f" in {self.file}" if self.file is not None else ""
        how = "built" if self.built else "reused"
        side = "full resolution" if self.size == 0 else f"shorter side {self.size} px"
        return (f"cache {self.kind}: {len(self)} images, {side}, {self.nbytes / 2**20:.0f} MiB{where}, "
                f"{how} in {self.seconds:.1f} s")


def _size_only(width: int, height: int) -> torch.Tensor:
    """What ``RandomResizedCrop.get_params`` reads of an image: its dimensions (no pixels)."""
    return torch.empty(1, 1, 1).expand(1, height, width)


def _scaled_resized_crop(step: T.RandomResizedCrop, image: Image.Image, original: tuple[int, int]) -> Image.Image:
    """``step`` applied as if to the original image: its box drawn at the original size (same random
    numbers, same box), taken from the cached pixels scaled to their size."""
    width, height = original
    i, j, h, w = step.get_params(_size_only(width, height), step.scale, step.ratio)
    sx, sy = image.width / width, image.height / height
    out_h, out_w = step.size
    box = (j * sx, i * sy, (j + w) * sx, (i + h) * sy)
    return image.resize((int(out_w), int(out_h)), resample=_PIL_RESAMPLE[step.interpolation], box=box)


class DatasetCache:
    """How one dataset reads its items from an :class:`ImageCache`: item ``i`` is row ``rows[i]``."""

    def __init__(self, cache: ImageCache, rows: np.ndarray) -> None:
        self.cache = cache
        self.rows = rows

    def item(self, index: int, transform: Callable[[Image.Image], Any]) -> Any:
        """``transform`` applied to the cached image of item ``index`` (see the module docstring)."""
        row = int(self.rows[index])
        image = self.cache.image(row)
        original = self.cache.original_size(row)
        if image.size == original:
            return transform(image)
        for step in _steps(transform):
            if isinstance(step, T.RandomResizedCrop):
                image = _scaled_resized_crop(step, image, original)
            else:
                image = step(image)
        return image


# --------------------------------------------------------------------------------------------
# building


def _shrink(image: Image.Image, size: int, interpolation: T.InterpolationMode) -> Image.Image:
    if size == 0 or min(image.size) <= size:
        return image
    return F.resize(image, size, interpolation)


def _decode(read: Callable[[], Image.Image], mode: str | None, size: int,
            interpolation: T.InterpolationMode) -> tuple[np.ndarray, tuple[int, int]]:
    image = read()
    if mode is not None and image.mode != mode:
        image = image.convert(mode)
    if image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    original = image.size
    array = np.asarray(_shrink(image, size, interpolation), dtype=np.uint8)
    return (array[:, :, None] if array.ndim == 2 else array), original


def _decode_all(readers: Sequence[Callable[[], Image.Image]], mode: str | None, size: int,
                interpolation: T.InterpolationMode) -> Iterator[tuple[np.ndarray, tuple[int, int]]]:
    """Decoded, shrunk pixels in order; Pillow releases the GIL while decoding and resizing, so
    threads use every core."""
    threads = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(threads) as pool:
        yield from pool.map(lambda read: _decode(read, mode, size, interpolation), readers)


def _file_stat(path: str) -> tuple[str, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (path, st.st_mtime_ns, st.st_size) if stat.S_ISREG(st.st_mode) else None


def _source_files(dataset: Any) -> list[tuple[str, int, int]]:
    """(path, mtime_ns, bytes) of every file the dataset's items come from: the item files
    themselves, or their container (``zip_path`` / ``npz_path`` / the part of ``file.npz#row``
    before ``#``). A one-line :class:`ConfigError` if an item has none."""
    stats: dict[str, tuple[str, int, int]] = {}
    for attribute in ("zip_path", "npz_path"):
        container = getattr(dataset, attribute, None)
        st = _file_stat(str(container)) if container is not None else None
        if st is not None:
            stats[st[0]] = st
    covered = bool(stats)  # a container file covers its members
    for path in dataset.paths:
        st = _file_stat(path) or _file_stat(path.split("#", 1)[0])
        if st is not None:
            stats[st[0]] = st
        elif not covered:
            raise ConfigError(
                f"data.cache=disk needs every image to come from a file, but item '{path}' of "
                f"{type(dataset).__name__} is not one; set data.cache=memory"
            )
    return sorted(stats.values())


def _digest(obj: Any) -> str:
    return hashlib.blake2b(json.dumps(obj, sort_keys=True).encode(), digest_size=12).hexdigest()


def _read_index(path: Path, signature: str, data: Path) -> _Index | None:
    try:
        meta = json.loads(path.read_text())
        if meta.get("format") != CACHE_FORMAT or meta.get("signature") != signature:
            return None
        index = _Index(np.asarray(meta["shapes"], np.int64).reshape(-1, 3), np.asarray(meta["offsets"], np.int64),
                       np.asarray(meta["originals"], np.int64).reshape(-1, 2))
        return index if data.is_file() and data.stat().st_size == index.nbytes else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _build_disk(readers: Sequence[Callable[[], Image.Image]], mode: str | None, size: int,
                interpolation: T.InterpolationMode, data: Path, index_path: Path, signature: str) -> _Index:
    shapes: list[tuple[int, int, int]] = []
    originals: list[tuple[int, int]] = []

    def write(handle: Any) -> None:
        for array, original in _decode_all(readers, mode, size, interpolation):
            handle.write(np.ascontiguousarray(array).data)
            shapes.append(array.shape)
            originals.append(original)

    atomic_write(data, write)
    index = _Index.of(shapes, originals)
    meta = {"format": CACHE_FORMAT, "signature": signature, "shapes": index.shapes.tolist(),
            "offsets": index.offsets.tolist(), "originals": index.originals.tolist()}
    atomic_write(index_path, lambda handle: handle.write(json.dumps(meta).encode()))
    return index


def _unique_items(datasets: Sequence[Any]) -> tuple[list[str], list[Callable[[], Image.Image]]]:
    paths: list[str] = []
    readers: list[Callable[[], Image.Image]] = []
    seen: set[str] = set()
    for dataset in datasets:
        for i, path in enumerate(dataset.paths):
            if path not in seen:
                seen.add(path)
                paths.append(path)
                readers.append(lambda d=dataset, i=i: d.read(i))
    return paths, readers


def build_cache(datasets: Sequence[Any], kind: CacheKind, size: int, mode: str | None,
                interpolation: T.InterpolationMode, folder: str | Path | None = None) -> ImageCache:
    """One :class:`ImageCache` over the distinct items (by path) of ``datasets``."""
    if not datasets:
        raise ValueError("build_cache needs at least one dataset")
    for n, dataset in enumerate(datasets):
        check_cacheable(dataset, f"dataset {n}")
    started = time.perf_counter()
    paths, readers = _unique_items(datasets)
    if kind == "memory":
        arrays, originals = [], []
        for array, original in _decode_all(readers, mode, size, interpolation):
            arrays.append(array)
            originals.append(original)
        index = _Index.of([a.shape for a in arrays], originals)
        buffer = np.empty(index.nbytes, dtype=np.uint8)
        for array, offset in zip(arrays, index.offsets):
            buffer[offset:offset + array.size] = array.reshape(-1)
        del arrays
        return ImageCache(buffer, index, paths, size, kind, seconds=time.perf_counter() - started)
    if kind != "disk":
        raise ConfigError(f"unknown data.cache '{kind}'; use none, memory or disk")
    if folder is None:
        raise ConfigError("data.cache=disk needs a folder; set data.cache_dir=PATH")
    folder = Path(folder).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the cache folder {folder} ({exc}); set data.cache_dir to a writable folder") from None
    key = _digest({"format": CACHE_FORMAT, "paths": paths, "size": size, "mode": mode,
                   "interpolation": interpolation.value})
    signature = _digest([_source_files(d) for d in datasets])
    data, index_path = folder / f"{key}.u8", folder / f"{key}.json"
    index = _read_index(index_path, signature, data)
    built = index is None
    if index is None:
        index = _build_disk(readers, mode, size, interpolation, data, index_path, signature)
    buffer = np.memmap(data, dtype=np.uint8, mode="r") if index.nbytes else np.zeros(0, np.uint8)
    return ImageCache(buffer, index, paths, size, kind, file=data, seconds=time.perf_counter() - started, built=built)


def cache_of(dataset: Any) -> ImageCache | None:
    """The :class:`ImageCache` a dataset (or a view of one, through ``.base``) reads from, if any."""
    for _ in range(8):
        attached = getattr(dataset, "cache", None)
        if isinstance(attached, DatasetCache):
            return attached.cache
        dataset = getattr(dataset, "base", None)
        if dataset is None:
            return None
    return None


def attach_cache(datasets: Iterable[Any], kind: CacheKind, size: int, mode: str | None,
                 interpolation: T.InterpolationMode, folder: str | Path | None = None) -> ImageCache:
    """Build one cache over ``datasets`` and make each of them read its items from it
    (``dataset.cache``); returns the cache."""
    datasets = list(datasets)
    cache = build_cache(datasets, kind, size, mode, interpolation, folder)
    for dataset in datasets:
        rows = np.fromiter((cache.row_of[p] for p in dataset.paths), dtype=np.int64, count=len(dataset.paths))
        dataset.cache = DatasetCache(cache, rows)
    return cache

