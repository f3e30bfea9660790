"""Folder-per-class images: ``root/<class name>/**/<image>``.

Every sub-folder of ``root`` is a class (its name is the class name); every image file inside it,
at any depth, is an item. Files without an image extension are ignored. Classes are indexed in
sorted name order.

:func:`folder_dataset` (the ``folder`` loader of the config) picks a split: if ``root`` holds
``train/`` and ``test/`` folders (each folder-per-class) they are used as given; otherwise the
classes are split with ``split_seed`` (null = the run ``seed``) -- class-disjoint by default
(``split_by="classes"``), or each class's images are divided (``split_by="items"``). With
``fold`` (the k-fold protocol sets ``fold``, ``n_folds`` and ``split_seed``) fold ``fold`` of a
stratified k-fold split of every image (:func:`deepmetric.data.splits.fold_indices`) is the test
split and the other folds the training split.
"""

from __future__ import annotations

import sys
from pathlib import Path

from deepmetric.data.image_dataset import ImageFileDataset, Transform, index_labels
from deepmetric.data.image_io import is_image_file
from deepmetric.data.splits import fold_indices, split_indices
from deepmetric.errors import ConfigError, DataError


def _class_dirs(root: Path, depth: int) -> list[Path]:
    """The folders ``depth`` levels below ``root`` (hidden ones skipped), in sorted order."""
    level = [root]
    for _ in range(depth):
        level = sorted(d for parent in level for d in parent.iterdir() if d.is_dir() and not d.name.startswith("."))
    return level


def scan_class_folders(root: str | Path, class_depth: int = 1) -> tuple[list[Path], list[str]]:
    """``(image paths, class name of each)``: every folder ``class_depth`` levels below ``root`` is a
    class (``1``: ``root/<class>/``; ``2``: ``root/<group>/<class>/`` such as Omniglot's
    alphabet/character, named ``group/class``), its images at any depth its items.

    With ``class_depth=1``, class folders that themselves hold image folders get a one-line warning
    on stderr: the tree is probably one level deeper than assumed (set ``class_depth=2``).
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"dataset folder {root} does not exist; pass the folder that holds one sub-folder per class")
    if class_depth < 1:
        raise ConfigError(f"class_depth must be >= 1, got {class_depth}")
    class_dirs = _class_dirs(root, class_depth)
    if not class_dirs:
        where = "sub-folders" if class_depth == 1 else f"folders {class_depth} levels down (class_depth={class_depth})"
        raise DataError(f"{root} has no class {where}; arrange images as {root}/<class name>/<image>.jpg")
    paths: list[Path] = []
    names: list[str] = []
    nested: list[str] = []
    for class_dir in class_dirs:
        files = sorted(p for p in class_dir.rglob("*") if p.is_file() and is_image_file(p))
        paths += files
        names += [class_dir.relative_to(root).as_posix()] * len(files)
        if class_depth == 1 and any(f.parent != class_dir for f in files):
            nested.append(class_dir.name)
    if not paths:
        raise DataError(f"no image files found in the class folders of {root}; supported: .jpg .png .bmp .tif ...")
    if nested and len(nested) == len(class_dirs):
        example = next(f for f in paths if f.parent.parent != root)
        print(f"warning: every class folder of {root} holds sub-folders of images (e.g. "
              f"{example.relative_to(root).parent}); each top-level folder is taken as ONE class. If the "
              "sub-folders are the classes, set data.params.class_depth=2 (deepmetric eval/embed: --class-depth 2)",
              file=sys.stderr)
    return paths, names


class ImageFolderDataset(ImageFileDataset):
    """The images under ``root/<class>/``, optionally one split of them; see the module docstring.

    Args:
        root: folder with one sub-folder per class.
        transform: applied to each RGB PIL image.
        skip_bad: leave unreadable images out (warned, counted in ``skipped``) instead of
            failing when they are read.
        split: ``"all"`` (default), or ``"train"``/``"test"`` of a seeded split.
        seed, test_fraction, split_by: the split (see :func:`deepmetric.data.splits.split_indices`).
            Labels are re-indexed ``0..C-1`` within the split.
        fold, n_folds: with ``fold``, fold ``fold`` of ``n_folds`` stratified folds (seeded by
            ``seed``) is the test split (:func:`deepmetric.data.splits.fold_indices`); every
            class then has items on both sides, so both splits index the same classes.
    """

    def __init__(
        self,
        root: str | Path,
        transform: Transform | None = None,
        skip_bad: bool = False,
        split: str | None = "all",
        seed: int = 0,
        test_fraction: float = 0.5,
        split_by: str = "classes",
        fold: int | None = None,
        n_folds: int = 5,
        class_depth: int = 1,
    ) -> None:
        paths, names = scan_class_folders(root, class_depth)
        if fold is not None:
            keep = fold_indices(names, split, fold, n_folds, seed)
        else:
            keep = split_indices(names, split, test_fraction=test_fraction, seed=seed, split_by=split_by)
        labels, class_names = index_labels([names[i] for i in keep])
        super().__init__([paths[i] for i in keep], labels, class_names, transform=transform, skip_bad=skip_bad)
        self.root = Path(root).expanduser()


def folder_dataset(
    root: str | Path,
    split: str | None = "all",
    transform: Transform | None = None,
    seed: int = 0,
    test_fraction: float = 0.5,
    split_by: str = "classes",
    skip_bad: bool = False,
    fold: int | None = None,
    n_folds: int = 5,
    split_seed: int | None = None,
    class_depth: int = 1,
) -> ImageFolderDataset:
    """The ``split`` (``train``, ``test`` or ``all``) of a folder-per-class dataset.

    Uses ``root/train`` and ``root/test`` when both exist (then ``fold`` or ``split_seed`` is a
    :class:`ConfigError`: the split is fixed); otherwise a split seeded by
    ``split_seed`` (null = ``seed``): fold ``fold`` of ``n_folds`` stratified folds when ``fold``
    is given, else ``root``'s classes (``split_by="classes"``, ``test_fraction`` of the classes
    held out) or each class's images (``split_by="items"``). ``class_depth``: how many folder
    levels below ``root`` the class folders are (:func:`scan_class_folders`).
    """
    root = Path(root).expanduser()
    fixed = (root / "train").is_dir() and (root / "test").is_dir()
    if fixed and (fold is not None or split_seed is not None):
        raise ConfigError(
            f"{root} has fixed train/ and test/ folders, so k-fold or repeated random splits are impossible; "
            "point data.root at a folder with one sub-folder per class, or use protocol.name=single"
        )
    if split in ("train", "test") and fixed:
        return ImageFolderDataset(root / split, transform=transform, skip_bad=skip_bad, class_depth=class_depth)
    return ImageFolderDataset(
        root, transform=transform, skip_bad=skip_bad, split=split,
        seed=seed if split_seed is None else int(split_seed),
        test_fraction=test_fraction, split_by=split_by, fold=fold, n_folds=n_folds, class_depth=class_depth,
    )
