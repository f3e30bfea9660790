"""Olivetti / AT&T faces (Samaria & Harter 1994): 40 people x 10 grey 64 x 64 photos, from a .npz.

The file holds ``images`` (uint8, ``(N, H, W)``) and ``labels`` (int, ``(N,)``, the person). Each
person is a class named ``person_NN``; grey images are returned as 3-channel RGB.

Zero-shot split (:func:`olivetti_dataset`): the people are shuffled with ``seed`` and
``test_fraction`` of them (default half: 20 of 40) are held out, so test faces belong to people
never seen in training.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from deepmetric.data.image_dataset import ImageDataset, Transform, index_labels
from deepmetric.data.splits import split_classes
from deepmetric.errors import ConfigError, DataError


def read_olivetti(npz_path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 (N, H, W), labels int (N,))`` from the .npz, checked."""
    npz_path = Path(npz_path).expanduser()
    if not npz_path.is_file():
        raise DataError(f"Olivetti file {npz_path} does not exist; pass the path of olivetti.npz")
    try:
        with np.load(npz_path) as data:
            if "images" not in data.files or "labels" not in data.files:
                raise DataError(f"{npz_path} must hold arrays 'images' and 'labels', found {data.files}")
            images, labels = data["images"], data["labels"]
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {npz_path} as a .npz file ({exc})") from exc
    if images.ndim != 3 or labels.shape != (images.shape[0],):
        raise DataError(
            f"{npz_path}: expected images (N, H, W) and labels (N,), got {images.shape} and {labels.shape}"
        )
    if images.dtype != np.uint8:
        raise DataError(f"{npz_path}: images must be uint8 (0-255), got {images.dtype}")
    return images, labels.astype(np.int64)


class OlivettiDataset(ImageDataset):
    """Olivetti faces from ``npz_path``; ``people`` keeps only those person ids (None: all)."""

    def __init__(self, npz_path: str | Path, people: list[int] | None = None, transform: Transform | None = None) -> None:
        self.npz_path = Path(npz_path).expanduser()
        images, persons = read_olivetti(self.npz_path)
        rows = np.arange(len(persons))
        if people is not None:
            unknown = sorted(set(people) - set(persons.tolist()))
            if unknown:
                raise DataError(f"people {unknown[:5]} are not in {self.npz_path}")
            rows = rows[np.isin(persons, list(people))]
        keys = persons[rows].tolist()
        labels, class_names = index_labels(keys, [f"person_{k:02d}" for k in keys])
        super().__init__(labels, class_names, [f"{self.npz_path}#{r}" for r in rows], transform)
        self.images = images[rows]
        self.people = keys

    def read(self, index: int) -> Image.Image:
        return Image.fromarray(np.ascontiguousarray(self.images[index])).convert("RGB")


def olivetti_dataset(
    root: str | Path,
    split: str | None = "all",
    transform: Transform | None = None,
    seed: int = 0,
    test_fraction: float = 0.5,
) -> OlivettiDataset:
    """The ``split`` (``train``/``test``/``all``) of Olivetti: a seeded split of the people."""
    _, persons = read_olivetti(root)
    if split in (None, "all"):
        return OlivettiDataset(root, None, transform)
    if split not in ("train", "test"):
        raise ConfigError(f"unknown split '{split}'; use train, test or all")
    parts = split_classes(persons.tolist(), test_fraction=test_fraction, seed=seed)
    return OlivettiDataset(root, parts.part(split), transform)
