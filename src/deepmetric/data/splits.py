"""Seeded, repeatable splits: class-disjoint (zero-shot retrieval), stratified by class, and
stratified k-fold.

* :func:`split_classes` -- whole classes go to train / val / test, so test classes are never
  seen in training (the deep metric learning protocol).
* :func:`stratified_split` -- every class is divided between train and test in the same
  proportion (closed-set classification).
* :func:`stratified_folds` / :func:`fold_indices` -- ``n_folds`` disjoint folds, each class
  spread over them in proportion (scikit-learn ``StratifiedKFold(shuffle=True,
  random_state=split_seed)``); fold ``fold`` is the test split and the other folds the training
  split (the k-fold protocol, ``protocol.name: kfold``, of every loader with the parameters
  ``fold``, ``n_folds`` and ``split_seed``).

The first two use ``numpy.random.default_rng(seed)`` on sorted inputs, so the same seed gives
the same split on any machine, whatever the order the items were listed in. The folds depend on
the order of the items (loaders list them in a fixed, sorted order) and on the seed.
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


def stratified_folds(labels: Sequence[Hashable] | np.ndarray, n_folds: int, seed: int) -> list[np.ndarray]:
    """The sorted test indices of each of ``n_folds`` stratified folds (scikit-learn
    ``StratifiedKFold(n_folds, shuffle=True, random_state=seed)``): disjoint, together every
    index exactly once, every class spread over the folds in proportion (so each fold holds at
    least one item of every class).

    Raises :class:`ConfigError` for ``n_folds < 2`` and :class:`DataError` when a class has
    fewer than ``n_folds`` items.
    """
    from sklearn.model_selection import StratifiedKFold

    if int(n_folds) < 2:
        raise ConfigError(f"n_folds must be >= 2 for k-fold cross-validation, got {n_folds}; set protocol.folds >= 2")
    keys = list(labels.tolist() if isinstance(labels, np.ndarray) else labels)
    if not keys:
        raise DataError("cannot split an empty dataset into folds; check that the data loaded")
    ordered = sorted(set(keys), key=lambda c: (str(type(c)), c))
    index = {c: i for i, c in enumerate(ordered)}
    y = np.asarray([index[c] for c in keys], dtype=np.int64)
    counts = np.bincount(y, minlength=len(ordered))
    small = [ordered[c] for c in range(len(ordered)) if counts[c] < int(n_folds)]
    if small:
        raise DataError(
            f"class(es) {small[:5]} have fewer than {n_folds} items, so {n_folds} stratified folds cannot "
            "each hold one; lower protocol.folds or remove those classes"
        )
    splitter = StratifiedKFold(n_splits=int(n_folds), shuffle=True, random_state=int(seed))
    return [np.sort(test) for _, test in splitter.split(np.zeros(len(y)), y)]


def fold_indices(
    labels: Sequence[Hashable] | np.ndarray, split: str | None, fold: int, n_folds: int, split_seed: int
) -> list[int]:
    """Indices of ``split`` of fold ``fold``: ``"test"`` is fold ``fold`` of
    :func:`stratified_folds`, ``"train"`` every other item, ``"all"``/``None`` every item.

    Raises :class:`ConfigError` for a fold outside ``0 .. n_folds - 1`` or an unknown split.
    """
    n = len(labels)
    if split is None or split == "all":
        return list(range(n))
    if split not in ("train", "test"):
        raise ConfigError(f"unknown split '{split}'; use train, test or all")
    if not 0 <= int(fold) < int(n_folds):
        raise ConfigError(f"data.params.fold must be in 0..{int(n_folds) - 1}, got {fold}")
    test = stratified_folds(labels, n_folds, split_seed)[int(fold)]
    if split == "test":
        return test.tolist()
    return np.setdiff1d(np.arange(n, dtype=np.int64), test).tolist()
