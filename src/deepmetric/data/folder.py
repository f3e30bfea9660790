"""Folder-per-class images: ``root/<class name>/**/<image>``.

Every sub-folder of ``root`` is a class (its name is the class name); every image file inside it,
at any depth, is an item. Files without an image extension are ignored. Classes are indexed in
sorted name order.

:func:`folder_dataset` (the ``folder`` loader of the config) picks a split: if ``root`` holds
``train/`` and ``test/`` folders (each folder-per-class) they are used as given; otherwise the
classes are split with ``seed`` -- class-disjoint by default (``split_by="classes"``), or each
class's images are divided (``split_by="items"``).
"""

from __future__ import annotations

from pathlib import Path

from deepmetric.data.image_dataset import ImageFileDataset, Transform, index_labels
from deepmetric.data.image_io import is_image_file
from deepmetric.data.splits import split_indices
from deepmetric.errors import DataError


def scan_class_folders(root: str | Path) -> tuple[list[Path], list[str]]:
    """``(image paths, class name of each)`` under ``root/<class>/``, in sorted order."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"dataset folder {root} does not exist; pass the folder that holds one sub-folder per class")
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise DataError(
            f"{root} has no class sub-folders; arrange images as {root}/<class name>/<image>.jpg"
        )
    paths: list[Path] = []
    names: list[str] = []
    for class_dir in class_dirs:
        files = sorted(p for p in class_dir.rglob("*") if p.is_file() and is_image_file(p))
        paths += files
        names += [class_dir.name] * len(files)
    if not paths:
        raise DataError(f"no image files found in the class folders of {root}; supported: .jpg .png .bmp .tif ...")
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
    ) -> None:
        paths, names = scan_class_folders(root)
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
) -> ImageFolderDataset:
    """The ``split`` (``train``, ``test`` or ``all``) of a folder-per-class dataset.

    Uses ``root/train`` and ``root/test`` when both exist; otherwise a seeded split of
    ``root``'s classes (``split_by="classes"``, ``test_fraction`` of the classes held out) or of
    each class's images (``split_by="items"``).
    """
    root = Path(root).expanduser()
    if split in ("train", "test") and (root / "train").is_dir() and (root / "test").is_dir():
        return ImageFolderDataset(root / split, transform=transform, skip_bad=skip_bad)
    return ImageFolderDataset(
        root, transform=transform, skip_bad=skip_bad, split=split, seed=seed,
        test_fraction=test_fraction, split_by=split_by,
    )
