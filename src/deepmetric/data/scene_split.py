"""Folder-per-class images split per class into train/test for closed-set scene classification.

The ``scene_folder`` loader of the config. Unlike ``folder`` (whose split seed is the run seed),
the split has its own seed, so repeated random splits (the remote-sensing protocol: "random
80/20 split of every class, repeated N times, accuracy mean +- std") can be chosen independently
of the training seed, and an optional per-class cap makes quick, cheaper experiments on a fixed
subset of a large dataset:

1. every image under ``root/<class>/`` is listed in sorted order (:func:`scan_class_folders`);
2. with ``max_per_class``, each class keeps ``max_per_class`` images drawn with
   ``numpy.random.default_rng(split_seed)`` (all of them when it has fewer);
3. :func:`deepmetric.data.splits.stratified_split` sends ``round(n_c * test_fraction)`` images of
   every class to test (at least one, leaving at least one for training), seeded by
   ``split_seed``.

Class indices are those of the whole folder (sorted class-folder names), so the train and the
test split share the same ``class_names`` and label indices. The same ``root``, ``split_seed``,
``test_fraction`` and ``max_per_class`` always give the same items; train and test are disjoint.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deepmetric.data.folder import scan_class_folders
from deepmetric.data.image_dataset import ImageFileDataset, Transform, index_labels
from deepmetric.data.splits import stratified_split
from deepmetric.errors import ConfigError, DataError

__all__ = ["scene_folder_dataset", "scene_split_indices"]


def scene_split_indices(
    labels: list[int], test_fraction: float, split_seed: int, max_per_class: int | None = None
) -> tuple[list[int], list[int]]:
    """``(train indices, test indices)`` (sorted) of a per-class split of items with ``labels``.

    See the module docstring for the procedure. Raises :class:`ConfigError` for a fraction
    outside (0, 1) or a cap below 2, and :class:`DataError` when a class has fewer than 2 items
    (it could not appear on both sides).
    """
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"scene_folder test_fraction must be in (0, 1), got {test_fraction}; use 0.2")
    if max_per_class is not None and int(max_per_class) < 2:
        raise ConfigError(
            f"scene_folder max_per_class must be >= 2 (one train and one test image), got "
            f"{max_per_class}; use null for every image"
        )
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(int(y), []).append(i)
    small = sorted(c for c, members in by_class.items() if len(members) < 2)
    if small:
        raise DataError(
            f"classes {small} have fewer than 2 images, so they cannot appear in both train and "
            "test; add images or remove those class folders"
        )
    rng = np.random.default_rng(split_seed)
    kept: list[int] = []
    for c in sorted(by_class):
        members = by_class[c]
        if max_per_class is not None and len(members) > int(max_per_class):
            members = sorted(rng.choice(members, size=int(max_per_class), replace=False).tolist())
        kept.extend(members)
    kept.sort()
    train_pos, test_pos = stratified_split([labels[i] for i in kept], test_fraction, seed=split_seed)
    return [kept[i] for i in train_pos.tolist()], [kept[i] for i in test_pos.tolist()]


def scene_folder_dataset(
    root: str | Path,
    split: str = "train",
    transform: Transform | None = None,
    seed: int = 0,
    test_fraction: float = 0.2,
    split_seed: int | None = None,
    max_per_class: int | None = None,
    skip_bad: bool = False,
) -> ImageFileDataset:
    """The ``"train"`` or ``"test"`` part of a per-class split of ``root/<class>/<image>``.

    Args:
        root: folder with one sub-folder per class.
        split: ``"train"`` or ``"test"``.
        transform: applied to each RGB PIL image.
        seed: the run seed (``config.seed``); the split seed when ``split_seed`` is null.
        test_fraction: fraction of every class's images that go to test (0.2 = the 80/20
            protocol).
        split_seed: seed of the split (and of the ``max_per_class`` subset); null = ``seed``.
        max_per_class: keep at most this many images of each class (a seeded random subset)
            before splitting; null = all.
        skip_bad: leave unreadable images out (with a warning) instead of failing on read.
    """
    if split not in ("train", "test"):
        raise ConfigError(f"scene_folder has no split '{split}'; use train or test")
    paths, names = scan_class_folders(root)
    labels, class_names = index_labels(names)
    train, test = scene_split_indices(
        labels, test_fraction, seed if split_seed is None else int(split_seed), max_per_class
    )
    keep = train if split == "train" else test
    dataset = ImageFileDataset(
        [paths[i] for i in keep], [labels[i] for i in keep], class_names, transform=transform, skip_bad=skip_bad
    )
    dataset.root = Path(root).expanduser()  # type: ignore[attr-defined]
    return dataset
