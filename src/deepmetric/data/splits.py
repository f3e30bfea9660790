"""Seeded, repeatable splits: class-disjoint (zero-shot retrieval) and stratified by class.

* :func:`split_classes` -- whole classes go to train / val / test, so test classes are never
  seen in training (the deep metric learning protocol).
* :func:`stratified_split` -- every class is divided between train and test in the same
  proportion (closed-set classification).

Both use ``numpy.random.default_rng(seed)`` on sorted inputs, so the same seed gives the same
split on any machine, whatever the order the items were listed in.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from deepmetric.errors import ConfigError, DataError


@dataclass(frozen=True)
class ClassSplit:
    """Class ids of each part of a class-disjoint split (each list sorted)."""

    train: list
    val: list
    test: list

    def part(self, name: str) -> list:
        if name not in ("train", "val", "test"):
            raise ConfigError(f"unknown split '{name}'; use train, val or test")
        return getattr(self, name)


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"{name} must be in [0, 1), got {value}")


def split_classes(
    classes: Sequence[Hashable], test_fraction: float = 0.5, val_fraction: float = 0.0, seed: int = 0
) -> ClassSplit:
    """Shuffle the distinct ``classes`` with ``seed`` and cut them into train / val / test.

    ``round(C * test_fraction)`` classes go to test and ``round(C * val_fraction)`` to val (at
    least one each when the fraction is positive); the rest train. Duplicates in ``classes``
    (e.g. a list of per-item labels) are ignored.
    """
    _check_fraction("test_fraction", test_fraction)
    _check_fraction("val_fraction", val_fraction)
    distinct = sorted(set(classes), key=lambda c: (str(type(c)), c))
    n = len(distinct)
    n_test = max(1, round(n * test_fraction)) if test_fraction > 0 else 0
    n_val = max(1, round(n * val_fraction)) if val_fraction > 0 else 0
    if n - n_test - n_val < 1:
        raise DataError(
            f"cannot split {n} classes into {n_test} test + {n_val} val + at least 1 train class; "
            "lower test_fraction/val_fraction or add classes"
        )
    order = np.random.default_rng(seed).permutation(n)
    test = [distinct[i] for i in sorted(order[:n_test])]
    val = [distinct[i] for i in sorted(order[n_test : n_test + n_val])]
    train = [distinct[i] for i in sorted(order[n_test + n_val :])]
    return ClassSplit(train=train, val=val, test=test)


def indices_of_classes(labels: Sequence[Hashable], classes: Sequence[Hashable]) -> list[int]:
    """Indices of the items whose label is in ``classes`` (in item order)."""
    wanted = set(classes)
    return [i for i, y in enumerate(labels) if y in wanted]


def stratified_split(
    labels: Sequence[Hashable] | np.ndarray, test_fraction: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Split item indices per class into ``(train_indices, test_indices)`` (both sorted).

    Each class with ``n`` items sends ``round(n * test_fraction)`` randomly chosen items to test,
    clamped to ``[1, n - 1]`` so that every class with at least two items appears on both sides; a
    class with a single item stays in train. Repeatable: the same labels and seed give the same
    split, and the two parts are disjoint and cover every item.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"test_fraction must be in (0, 1), got {test_fraction}")
    labels = list(labels.tolist() if isinstance(labels, np.ndarray) else labels)
    if not labels:
        raise DataError("cannot split an empty dataset; check that the data loaded")
    rng = np.random.default_rng(seed)
    by_class: dict[Hashable, list[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(y, []).append(i)
    test: list[int] = []
    for y in sorted(by_class, key=lambda c: (str(type(c)), c)):
        idx = np.asarray(by_class[y])
        n = len(idx)
        if n < 2:
            continue
        n_test = min(max(round(n * test_fraction), 1), n - 1)
        test.extend(idx[rng.permutation(n)[:n_test]].tolist())
    test_arr = np.asarray(sorted(test), dtype=np.int64)
    train_arr = np.setdiff1d(np.arange(len(labels), dtype=np.int64), test_arr)
    return train_arr, test_arr


SPLITS = ("train", "test", "all")


def split_indices(
    labels: Sequence[Hashable],
    split: str | None,
    test_fraction: float = 0.5,
    seed: int = 0,
    split_by: str = "classes",
) -> list[int]:
    """Indices of the items in ``split`` (``"train"``, ``"test"``, or ``"all"``/``None``).

    ``split_by="classes"`` uses :func:`split_classes` (class-disjoint, for retrieval of unseen
    classes); ``split_by="items"`` uses :func:`stratified_split` (same classes on both sides).
    """
    if split is None or split == "all":
        return list(range(len(labels)))
    if split not in ("train", "test"):
        raise ConfigError(f"unknown split '{split}'; use train, test or all")
    if split_by == "classes":
        parts = split_classes(labels, test_fraction=test_fraction, seed=seed)
        return indices_of_classes(labels, parts.part(split))
    if split_by == "items":
        train, test = stratified_split(labels, test_fraction, seed)
        return (train if split == "train" else test).tolist()
    raise ConfigError(f"unknown split_by '{split_by}'; use 'classes' (zero-shot) or 'items' (stratified)")
