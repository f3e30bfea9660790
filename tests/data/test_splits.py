"""Class-disjoint and stratified splits: disjoint, covering, proportional, repeatable by seed."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from deepmetric.data.splits import split_classes, split_indices, stratified_split
from deepmetric.errors import ConfigError, DataError


def test_split_classes_is_a_seeded_partition():
    classes = list(range(20)) * 3  # duplicates ignored
    parts = split_classes(classes, test_fraction=0.25, val_fraction=0.1, seed=7)
    assert len(parts.test) == 5 and len(parts.val) == 2 and len(parts.train) == 13
    assert sorted(parts.train + parts.val + parts.test) == list(range(20))
    assert split_classes(list(reversed(classes)), test_fraction=0.25, val_fraction=0.1, seed=7) == parts
    assert split_classes(classes, test_fraction=0.25, val_fraction=0.1, seed=8) != parts
    with pytest.raises(DataError, match="at least 1 train"):
        split_classes([1, 2], test_fraction=0.5, val_fraction=0.4)
    with pytest.raises(ConfigError):
        split_classes([1, 2, 3], test_fraction=1.5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stratified_split_per_class_proportions(seed):
    labels = ["a"] * 10 + ["b"] * 5 + ["c"] * 2 + ["d"] * 1 + [7] * 4
    rng = np.random.default_rng(seed + 100)
    labels = [labels[i] for i in rng.permutation(len(labels))]
    train, test = stratified_split(labels, 0.3, seed=seed)
    assert set(train.tolist()).isdisjoint(test.tolist())
    assert sorted(train.tolist() + test.tolist()) == list(range(len(labels)))
    test_counts = Counter(labels[i] for i in test)
    # round(n * 0.3) clamped to [1, n - 1]; a single-item class stays in train
    assert test_counts == Counter({"a": 3, "b": 2, "c": 1, 7: 1})
    again = stratified_split(labels, 0.3, seed=seed)
    assert np.array_equal(again[0], train) and np.array_equal(again[1], test)


def test_stratified_split_depends_on_seed_and_checks_input():
    labels = np.repeat(np.arange(5), 20)
    draws = {tuple(stratified_split(labels, 0.5, seed=s)[1]) for s in range(4)}
    assert len(draws) == 4
    with pytest.raises(ConfigError):
        stratified_split(labels, 0.0)
    with pytest.raises(DataError):
        stratified_split([], 0.5)


def test_split_indices_modes():
    labels = ["x"] * 4 + ["y"] * 4 + ["z"] * 4 + ["w"] * 4
    train = split_indices(labels, "train", test_fraction=0.5, seed=0)
    test = split_indices(labels, "test", test_fraction=0.5, seed=0)
    assert {labels[i] for i in train}.isdisjoint({labels[i] for i in test})
    assert sorted(train + test) == list(range(16))
    items = split_indices(labels, "test", test_fraction=0.25, split_by="items")
    assert Counter(labels[i] for i in items) == Counter({"x": 1, "y": 1, "z": 1, "w": 1})
    assert split_indices(labels, "all") == list(range(16))
    with pytest.raises(ConfigError, match="split_by"):
        split_indices(labels, "train", split_by="people")
