"""Dataset views used by training: label-remapped subsets, validation carving, seeded items.

* :class:`SubsetView` -- a subset of a dataset whose labels are remapped to 0..C-1 (classifier
  losses need contiguous labels), keeping ``labels``, ``paths`` and ``class_names``.
* :func:`carve_validation` -- hold out whole training classes (zero-shot) or a fraction of the
  items of each class (closed set) for checkpoint selection.
* :class:`SeededItems` -- fetches ``(index, seed)`` pairs and seeds the RNGs before each item, so
  random augmentation of an item depends only on (run seed, epoch, position) -- the same with any
  number of workers, and the same after a resume.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from deepmetric.errors import DataError
from deepmetric.training.seed import derive_seed

__all__ = ["ITEM_ATTRIBUTES", "SeededItems", "SubsetView", "carve_validation", "dataset_labels", "seeded_batches"]

#: per-item attributes of a dataset that a subset keeps (re-ID cameras and identities, speakers)
ITEM_ATTRIBUTES = ("cameras", "persons", "speakers")


def dataset_labels(dataset: Any) -> list[int]:
    """The integer label of every item, from ``dataset.labels``."""
    labels = getattr(dataset, "labels", None)
    if labels is None:
        raise DataError(
            f"dataset {type(dataset).__name__} has no 'labels' attribute; a training dataset must "
            "expose one integer label per item as .labels"
        )
    if isinstance(labels, torch.Tensor):
        labels = labels.tolist()
    return [int(v) for v in labels]


class SubsetView(Dataset):
    """Items ``indices`` of ``base``; with ``remap`` labels become 0..C-1 in sorted label order."""

    def __init__(self, base: Any, indices: Sequence[int], remap: bool = True) -> None:
        self.base = base
        self.indices = [int(i) for i in indices]
        base_labels = dataset_labels(base)
        original = [base_labels[i] for i in self.indices]
        classes = sorted(set(original))
        self.label_map = {c: n for n, c in enumerate(classes)} if remap else {c: c for c in classes}
        self.labels = [self.label_map[y] for y in original]
        paths = getattr(base, "paths", None)
        self.paths = [str(paths[i]) for i in self.indices] if paths is not None else None
        names = getattr(base, "class_names", None)
        if names is not None and remap:
            self.class_names = [str(names[c]) if c < len(names) else str(c) for c in classes]
        else:
            self.class_names = names
        self.collate_fn = getattr(base, "collate_fn", None)
        for name in ITEM_ATTRIBUTES:  # per-item side information follows the items
            values = getattr(base, name, None)
            if values is not None:
                setattr(self, name, [values[i] for i in self.indices])

    @property
    def num_classes(self) -> int:
        return len(self.label_map)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        item = self.base[self.indices[i]]
        return item[0], self.labels[i]


def carve_validation(
    labels: Sequence[int], fraction: float, by: str, seed: int
) -> tuple[list[int], list[int]]:
    """(train indices, validation indices) of a training split.

    ``by="classes"``: round(fraction x C) whole classes (at least 2) go to validation, chosen by a
    seeded permutation; at least 2 classes stay for training. ``by="items"``: round(fraction x n_c)
    items of every class with n_c >= 2 (at least 1, leaving at least 1 for training).
    ``fraction == 0`` returns every index for training and none for validation.
    """
    n = len(labels)
    if fraction <= 0:
        return list(range(n)), []
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(int(y), []).append(i)
    classes = sorted(by_class)
    if by == "classes":
        n_val = max(2, round(fraction * len(classes)))
        if len(classes) - n_val < 2:
            raise DataError(
                f"cannot carve {n_val} validation classes from {len(classes)} training classes and keep "
                "2 for training; lower data.val_fraction, set data.val_by=items, or use data.val_fraction=0 "
                "with eval.split=test"
            )
        val_classes = set(rng.permutation(classes)[:n_val].tolist())
        val = [i for i in range(n) if int(labels[i]) in val_classes]
        train = [i for i in range(n) if int(labels[i]) not in val_classes]
        return train, val
    val_set: set[int] = set()
    for c in classes:
        members = by_class[c]
        if len(members) < 2:
            continue
        take = min(len(members) - 1, max(1, round(fraction * len(members))))
        val_set.update(rng.permutation(members)[:take].tolist())
    return [i for i in range(n) if i not in val_set], sorted(val_set)


class SeededItems(Dataset):
    """Wraps a dataset so ``self[(index, seed)]`` seeds torch's CPU generator, numpy and ``random``
    with ``seed`` and then returns ``base[index]``.

    Only the CPU generator: item transforms draw from it (data-loader workers cannot use CUDA), and
    ``torch.manual_seed`` would also re-seed every accelerator, 90 us instead of 1 us per item."""

    def __init__(self, base: Any) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        torch.default_generator.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        return self.base[index]


def seeded_batches(batches: Sequence[Sequence[int]], seed: int, epoch: int, rank: int = 0,
                   world_size: int = 1) -> list[list[tuple[int, int]]]:
    """``(item index, item seed)`` for every item of this rank's ``batches`` of ``epoch``: the
    seed depends on (seed, epoch, GLOBAL batch index, position). Rank ``r`` of ``world_size``
    draws the global batches ``r, r + world_size, ...``, so its local batch ``b`` is global batch
    ``b x world_size + r``: two ranks never augment with the same seeds, and one process (``b``
    itself) is unchanged."""
    return [
        [(int(i), derive_seed(seed, "item", epoch, b * world_size + rank, j)) for j, i in enumerate(batch)]
        for b, batch in enumerate(batches)
    ]
