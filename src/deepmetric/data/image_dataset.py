"""The image dataset every loader returns: items ``(image_tensor, label)``.

Attributes shared by all image datasets:

* ``labels`` -- one int per item, class indices ``0 .. len(class_names) - 1``;
* ``class_names`` -- the name of each class index;
* ``paths`` -- where each item comes from (a file, a zip member, ``file.npz#row``);
* ``skipped`` -- how many unreadable files ``skip_bad=True`` left out;
* optional per-item metadata: ``is_query`` / ``is_gallery`` (retrieval protocols with fixed
  query and gallery sets), ``cameras``, ``sequences`` (re-identification).

Without a ``transform`` an item's image is a float tensor in [0, 1] of its own size; pass the
model's ``train_transform()`` / ``eval_transform()`` to get batches of one size.

``cache`` (None by default) is set by :func:`deepmetric.data.cache.attach_cache` (``data.cache``):
items are then made from the cached decoded pixels instead of :meth:`ImageDataset.read`.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image
from torch.utils.data import Dataset

from deepmetric.data.image_io import drop_unreadable, load_image
from deepmetric.data.transforms import to_tensor_transform
from deepmetric.errors import DataError

Transform = Callable[[Image.Image], Any]
_TO_TENSOR = to_tensor_transform(3)


def index_labels(keys: Sequence[Hashable], names: Sequence[str] | None = None) -> tuple[list[int], list[str]]:
    """Map raw class keys (strings or ints) to indices ``0..C-1`` in sorted key order.

    Returns ``(labels, class_names)``; ``names`` (one per item, e.g. human-readable class names)
    replaces ``str(key)`` as the class name when given.
    """
    try:
        ordered = sorted(set(keys))
    except TypeError:  # mixed types: order by text
        ordered = sorted(set(keys), key=str)
    index = {key: i for i, key in enumerate(ordered)}
    labels = [index[k] for k in keys]
    class_names = [str(k) for k in ordered]
    if names is not None:
        for key, name in zip(keys, names):
            class_names[index[key]] = str(name)
    return labels, class_names


class ImageDataset(Dataset):
    """Base class: subclasses implement :meth:`read` (item index -> PIL image)."""

    #: decoded-pixel cache the items are made from (:mod:`deepmetric.data.cache`); None = read()
    cache: Any = None

    def __init__(
        self,
        labels: Sequence[int],
        class_names: Sequence[str],
        paths: Sequence[str],
        transform: Transform | None = None,
    ) -> None:
        if len(labels) != len(paths):
            raise DataError(f"{len(labels)} labels for {len(paths)} items; give one label per item")
        if len(labels) == 0:
            raise DataError(f"{type(self).__name__} is empty: no images were found; check the root path and split")
        self.labels: list[int] = [int(v) for v in labels]
        self.class_names: list[str] = [str(v) for v in class_names]
        bad = [v for v in self.labels if not 0 <= v < len(self.class_names)]
        if bad:
            raise DataError(f"label {bad[0]} is outside 0..{len(self.class_names) - 1}; labels must index class_names")
        self.paths: list[str] = [str(p) for p in paths]
        self.transform = transform
        self.skipped = 0
        self.is_query: list[bool] | None = None
        self.is_gallery: list[bool] | None = None
        self.cameras: list[Any] | None = None
        self.sequences: list[Any] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def read(self, index: int) -> Image.Image:
        """The RGB image of item ``index`` (before the transform)."""
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        transform = self.transform if self.transform is not None else _TO_TENSOR
        if self.cache is not None:
            return self.cache.item(index, transform), self.labels[index]
        return transform(self.read(index)), self.labels[index]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(items={len(self)}, classes={self.num_classes}, skipped={self.skipped})"


class ImageFileDataset(ImageDataset):
    """Images stored as files, one path and one label per item.

    Args:
        paths: image files.
        labels: class index of each file.
        class_names: name of each class index.
        transform: applied to the RGB PIL image.
        skip_bad: check every file now and leave unreadable ones out (with a warning; counted
            in ``skipped``) instead of failing when the item is read.
        metadata: optional per-item lists (``is_query``, ``is_gallery``, ``cameras``,
            ``sequences``), filtered along with the files.
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        labels: Sequence[int],
        class_names: Sequence[str],
        transform: Transform | None = None,
        skip_bad: bool = False,
        metadata: dict[str, Sequence[Any]] | None = None,
    ) -> None:
        metadata = dict(metadata or {})
        unknown = set(metadata) - {"is_query", "is_gallery", "cameras", "sequences"}
        if unknown:
            raise DataError(f"unknown metadata {sorted(unknown)}; use is_query, is_gallery, cameras, sequences")
        for key, column in metadata.items():
            if len(column) != len(paths):
                raise DataError(f"metadata '{key}' has {len(column)} entries for {len(paths)} images")
        skipped = 0
        if skip_bad:
            keys = list(metadata)
            _, kept_paths, kept_labels, *kept_columns = drop_unreadable(
                list(paths), list(labels), *(list(metadata[k]) for k in keys)
            )
            skipped = len(paths) - len(kept_paths)
            paths, labels = kept_paths, kept_labels
            metadata = dict(zip(keys, kept_columns))
        super().__init__(labels, class_names, [str(p) for p in paths], transform)
        self.skipped = skipped
        for key, column in metadata.items():
            setattr(self, key, [bool(v) for v in column] if key.startswith("is_") else list(column))

    def read(self, index: int) -> Image.Image:
        return load_image(self.paths[index])
