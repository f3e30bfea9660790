"""A toy dataset loader with k-fold parameters, importable by path for protocol tests.

``data.name: toy_fold_data:toy_fold_dataset`` (and ``model.name: toy_training:tiny_model``) work
in-process under pytest (this folder is on ``sys.path``) and in a ``deepmetric`` subprocess with
``PYTHONPATH=tests/training``. The loader follows the loader contract of
:mod:`deepmetric.data.registry`: ``fold``/``n_folds``/``split_seed`` select fold ``fold`` of
:func:`deepmetric.data.splits.fold_indices` as the test split; without ``fold`` the split is
:func:`deepmetric.data.splits.stratified_split` with ``test_fraction`` (seeded by ``split_seed``,
else the run seed). Items keep the paths ``item_<i>.npy`` of the whole set, so a test can check
which items a split holds. ``TOY_FOLD_DELAY`` (seconds, environment) slows every item read, so a
test can kill a run mid-fold; it changes no number.
"""

from __future__ import annotations

import os
import time
from typing import Any

from torch import Tensor

from deepmetric.data.splits import fold_indices, stratified_split
from toy_training import ToyDataset

#: the whole toy set: classes x items per class
N_CLASSES = 4
PER_CLASS = 9


class ToyFoldSplit(ToyDataset):
    """Items ``keep`` of the whole toy set (labels, paths and class names of the whole set)."""

    def __init__(self, keep: list[int], transform: Any, n_classes: int, per_class: int) -> None:
        super().__init__(list(range(n_classes)), per_class, transform)
        self.items = [self.items[i] for i in keep]
        self.labels = [self.labels[i] for i in keep]
        self.paths = [self.paths[i] for i in keep]
        self.delay = float(os.environ.get("TOY_FOLD_DELAY", "0") or 0)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        if self.delay:
            time.sleep(self.delay)
        return super().__getitem__(i)


def all_labels(n_classes: int = N_CLASSES, per_class: int = PER_CLASS) -> list[int]:
    """Labels of the whole toy set, in item order."""
    return [c for c in range(n_classes) for _ in range(per_class)]


def toy_fold_dataset(
    split: str = "train",
    transform: Any = None,
    seed: int = 0,
    fold: int | None = None,
    n_folds: int = 3,
    split_seed: int | None = None,
    test_fraction: float = 0.25,
    n_classes: int = N_CLASSES,
    per_class: int = PER_CLASS,
) -> ToyFoldSplit:
    """One split of the toy set (see the module docstring)."""
    labels = all_labels(n_classes, per_class)
    split_seed = seed if split_seed is None else split_seed
    if fold is not None:
        keep = fold_indices(labels, split, fold, n_folds, split_seed)
    else:
        train, test = stratified_split(labels, test_fraction, split_seed)
        keep = (train if split == "train" else test).tolist()
    return ToyFoldSplit(keep, transform, n_classes, per_class)
