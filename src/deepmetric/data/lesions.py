"""Skin-lesion dataset loaders (``data.name``: ``ph2``, ``isic2016``, ``isic2017``).

The parsers of the released files are :mod:`deepmetric.data.skin_lesions`; these loaders follow
the loader contract of :mod:`deepmetric.data.registry` and return an
:class:`~deepmetric.data.image_dataset.ImageFileDataset` of one split, labels indexing the
dataset's ``class_names`` (the same list for every split):

* ``fold`` given (the k-fold protocol, ``protocol.name: kfold``, sets ``fold``, ``n_folds`` and
  ``split_seed``): fold ``fold`` of a stratified ``n_folds``-fold split
  (:func:`deepmetric.data.splits.stratified_folds`) is the test split, the other folds the
  training split. ISIC loaders cross-validate their training release.
* otherwise PH2 is split per class, ``round(test_fraction x n_c)`` images of every class (at
  least one, seeded by ``split_seed``) in test; ISIC loaders use the challenge's own training and
  test releases;
* ``test_ph2_root`` (ISIC loaders, without ``fold``): the test split is PH2 relabelled into the
  ISIC classes (nevi -> ``nevus`` / ``benign``; melanoma -> ``melanoma`` / ``malignant``), the
  generalisation test of DeMAL-CNN (He et al., 2022: train on ISIC, test on PH2).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from deepmetric.data.image_dataset import ImageFileDataset, Transform
from deepmetric.data.skin_lesions import LabelledImages, binarize, isic2016, isic2017, ph2
from deepmetric.data.splits import fold_indices
from deepmetric.errors import ConfigError, DataError

__all__ = ["isic2016_dataset", "isic2017_dataset", "ph2_dataset", "select_split"]


def select_split(
    labels: Sequence[int],
    split: str,
    fold: int | None = None,
    n_folds: int = 5,
    split_seed: int = 0,
    test_fraction: float = 0.2,
) -> list[int]:
    """Indices of ``split`` (``train`` / ``test`` / ``all``): with ``fold``, fold ``fold`` of
    :func:`~deepmetric.data.splits.stratified_folds` is the test split; without it,
    ``round(test_fraction x n_c)`` items of every class (at least 1, leaving at least 1; seeded by
    ``split_seed``) are."""
    n = len(labels)
    if split == "all":
        return list(range(n))
    if split not in ("train", "test"):
        raise ConfigError(f"split must be 'train', 'test' or 'all', got '{split}'")
    if fold is not None:
        return fold_indices(labels, split, int(fold), int(n_folds), int(split_seed))
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"test_fraction must be in (0, 1), got {test_fraction}; use 0.2")
    rng = np.random.default_rng(int(split_seed))
    y = np.asarray(labels)
    test: set[int] = set()
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        take = min(len(idx) - 1, max(1, round(test_fraction * len(idx))))
        test.update(idx[:take].tolist())
    return sorted(test) if split == "test" else [i for i in range(n) if i not in test]


def _images(data: LabelledImages, keep: Sequence[int], transform: Transform | None) -> ImageFileDataset:
    return ImageFileDataset(
        [data.paths[i] for i in keep], [data.labels[i] for i in keep], list(data.class_names), transform=transform
    )


def _ph2_as(root: str | Path, class_names: Sequence[str]) -> LabelledImages:
    """PH2 relabelled into ``class_names`` (ISIC 2017: nevus / seborrheic_keratosis / melanoma;
    ISIC 2016: benign / malignant): both nevus classes -> the nevus (benign) class."""
    data = ph2(root)
    names = list(class_names)
    if "melanoma" in names and "nevus" in names:
        target = {0: names.index("nevus"), 1: names.index("nevus"), 2: names.index("melanoma")}
    elif names == ["benign", "malignant"]:
        target = {0: 0, 1: 0, 2: 1}
    else:
        raise DataError(f"cannot map PH2's classes onto {names}; test_ph2_root works with isic2016 and isic2017")
    return LabelledImages(list(data.paths), [target[y] for y in data.labels], names)


def ph2_dataset(
    root: str | Path,
    split: str = "train",
    transform: Transform | None = None,
    fold: int | None = None,
    n_folds: int = 5,
    split_seed: int = 0,
    test_fraction: float = 0.2,
    binary: bool = False,
) -> ImageFileDataset:
    """PH2 (200 dermoscopy images: common nevus / atypical nevus / melanoma), one split.

    ``fold``/``n_folds``/``split_seed`` select a stratified k-fold split (:func:`select_split`);
    ``binary=True`` relabels as benign vs melanoma (:func:`deepmetric.data.skin_lesions.binarize`).
    """
    data = ph2(root)
    if binary:
        data = binarize(data, "melanoma")
    keep = select_split(data.labels, split, fold, n_folds, split_seed, test_fraction)
    return _images(data, keep, transform)


def _isic_dataset(
    parse: Callable[[Path, Path], LabelledImages],
    root: str | Path,
    split: str,
    transform: Transform | None,
    files: dict[str, str],
    fold: int | None,
    n_folds: int,
    split_seed: int,
    test_ph2_root: str | Path | None,
) -> ImageFileDataset:
    root = Path(root).expanduser()
    train = parse(root / files["train_csv"], root / files["train_images"])
    if fold is not None:
        if test_ph2_root is not None:
            raise ConfigError(
                "data.params.test_ph2_root tests on PH2, so folds of the ISIC training release make no sense "
                "with it; use protocol.name=single or remove test_ph2_root"
            )
        return _images(train, select_split(train.labels, split, fold, n_folds, split_seed), transform)
    if split == "train":
        return _images(train, range(len(train.labels)), transform)
    if split != "test":
        raise ConfigError(f"split must be 'train' or 'test', got '{split}'")
    if test_ph2_root is not None:
        test = _ph2_as(test_ph2_root, train.class_names)
    else:
        test = parse(root / files["test_csv"], root / files["test_images"])
    return _images(test, range(len(test.labels)), transform)


def isic2016_dataset(
    root: str | Path,
    split: str = "train",
    transform: Transform | None = None,
    fold: int | None = None,
    n_folds: int = 5,
    split_seed: int = 0,
    test_ph2_root: str | Path | None = None,
    train_csv: str = "ISBI2016_ISIC_Part3_Training_GroundTruth.csv",
    train_images: str = "ISBI2016_ISIC_Part3_Training_Data",
    test_csv: str = "ISBI2016_ISIC_Part3_Test_GroundTruth.csv",
    test_images: str = "ISBI2016_ISIC_Part3_Test_Data",
) -> ImageFileDataset:
    """ISIC 2016 part 3 (benign / malignant) from the challenge release under ``root`` (file
    names relative to ``root``). With ``fold`` the training release is cross-validated;
    ``test_ph2_root`` tests on PH2 (nevi benign, melanoma malignant) instead of the test release."""
    files = {"train_csv": train_csv, "train_images": train_images, "test_csv": test_csv, "test_images": test_images}
    return _isic_dataset(isic2016, root, split, transform, files, fold, n_folds, split_seed, test_ph2_root)


def isic2017_dataset(
    root: str | Path,
    split: str = "train",
    transform: Transform | None = None,
    fold: int | None = None,
    n_folds: int = 5,
    split_seed: int = 0,
    test_ph2_root: str | Path | None = None,
    train_csv: str = "ISIC-2017_Training_Part3_GroundTruth.csv",
    train_images: str = "ISIC-2017_Training_Data",
    test_csv: str = "ISIC-2017_Test_v2_Part3_GroundTruth.csv",
    test_images: str = "ISIC-2017_Test_v2_Data",
) -> ImageFileDataset:
    """ISIC 2017 part 3 (nevus / seborrheic keratosis / melanoma) from the challenge release
    under ``root``. With ``fold`` the training release is cross-validated; ``test_ph2_root``
    tests on PH2 (both nevus classes -> nevus) instead of the test release."""
    files = {"train_csv": train_csv, "train_images": train_images, "test_csv": test_csv, "test_images": test_images}
    return _isic_dataset(isic2017, root, split, transform, files, fold, n_folds, split_seed, test_ph2_root)
