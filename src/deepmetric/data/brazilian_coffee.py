"""Brazilian Coffee Scenes (Penatti, Nogueira, dos Santos, CVPR Workshops 2015).

2,876 SPOT tiles of 64 x 64 pixels (green, red and near-infrared bands stored as the three
channels of a JPEG), two classes, ``coffee`` and ``noncoffee``, released in five folds for
5-fold cross-validation. The released layout::

    brazilian_coffee_scenes/
        fold1.txt      one entry per line, "<class>.<image name>", e.g. "coffee.1.15.203.11.56"
        fold1/         the fold's images, "<image name>.jpg"
        fold2.txt, fold2/, ... fold5.txt, fold5/

The parser also accepts each list inside its fold folder (``fold1/fold1.txt``), image files
that keep the class prefix (``coffee.<image name>.jpg``) and the extensions .jpg, .jpeg,
.png, .tif, .tiff, so re-packed copies load too. Class indices follow :data:`CLASS_NAMES`
(``noncoffee`` = 0, ``coffee`` = 1).

Protocol: train on four folds, test on the remaining one, repeat for each fold, report the
mean +- std accuracy (:func:`cross_validation_split`,
:func:`deepmetric.evaluation.classification.summarize_repeats`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image
from torch.utils.data import Dataset

from deepmetric.data.image_io import to_mode
from deepmetric.errors import DataError

CLASS_NAMES: tuple[str, ...] = ("noncoffee", "coffee")
NUM_FOLDS = 5
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
_ALIASES = {"coffee": "coffee", "noncoffee": "noncoffee", "non-coffee": "noncoffee", "non_coffee": "noncoffee"}


@dataclass(frozen=True)
class CoffeeScene:
    """One tile: image path, class index, class name and the fold (1..5) it belongs to."""

    path: Path
    label: int
    class_name: str
    fold: int


def parse_fold_list(path: str | Path) -> list[tuple[str, str]]:
    """Parse a fold list into ``(class_name, image_name)`` pairs, in file order.

    Each non-blank line is ``<class>.<image name>``; the class is the text before the first dot
    (``coffee`` or ``noncoffee``; ``non-coffee``/``non_coffee`` are accepted too).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"fold list {path} does not exist; point root at the unpacked brazilian_coffee_scenes folder")
    entries: list[tuple[str, str]] = []
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        head, dot, name = line.partition(".")
        cls = _ALIASES.get(head.lower())
        if not dot or not name or cls is None:
            raise DataError(
                f"{path}:{number}: expected '<class>.<image name>' with class 'coffee' or "
                f"'noncoffee', got {line!r}; fix or remove that line"
            )
        entries.append((cls, name))
    if not entries:
        raise DataError(f"fold list {path} has no entries; re-extract the dataset")
    return entries


def _dataset_dir(root: Path) -> Path:
    """``root`` itself or its ``brazilian_coffee_scenes`` sub-folder, whichever holds fold1."""
    for base in (root, root / "brazilian_coffee_scenes"):
        if (base / "fold1").is_dir() or (base / "fold1.txt").is_file():
            return base
    raise DataError(
        f"no Brazilian Coffee Scenes folds under {root} (expected fold1.txt and fold1/ ... "
        "fold5/); point root at the unpacked brazilian_coffee_scenes folder"
    )


def _fold_list_path(base: Path, fold: int) -> Path:
    for candidate in (base / f"fold{fold}.txt", base / f"fold{fold}" / f"fold{fold}.txt"):
        if candidate.is_file():
            return candidate
    raise DataError(
        f"missing list for fold {fold}: neither {base / f'fold{fold}.txt'} nor "
        f"{base / f'fold{fold}' / f'fold{fold}.txt'} exists; re-extract the dataset"
    )


def _image_path(folder: Path, class_name: str, image_name: str) -> Path:
    for stem in (image_name, f"{class_name}.{image_name}"):
        for ext in ("",) + IMAGE_EXTENSIONS:
            candidate = folder / f"{stem}{ext}"
            if candidate.is_file():
                return candidate
    raise DataError(
        f"image for entry '{class_name}.{image_name}' not found in {folder} (tried "
        f"{image_name}.jpg and the other extensions {', '.join(IMAGE_EXTENSIONS)}); re-extract the dataset"
    )


def _check_folds(folds: Iterable[int]) -> list[int]:
    out = [int(f) for f in folds]
    bad = [f for f in out if not 1 <= f <= NUM_FOLDS]
    if bad or not out:
        raise DataError(f"folds must be a non-empty subset of 1..{NUM_FOLDS}, got {out}")
    return out


def brazilian_coffee_scenes(root: str | Path, folds: Sequence[int] = (1, 2, 3, 4, 5)) -> list[CoffeeScene]:
    """All tiles of the given ``folds`` (1-based), in fold then list order."""
    base = _dataset_dir(Path(root))
    items: list[CoffeeScene] = []
    for fold in _check_folds(folds):
        folder = base / f"fold{fold}"
        if not folder.is_dir():
            raise DataError(f"missing image folder {folder}; re-extract the dataset")
        for cls, name in parse_fold_list(_fold_list_path(base, fold)):
            items.append(CoffeeScene(_image_path(folder, cls, name), CLASS_NAMES.index(cls), cls, fold))
    return items


def cross_validation_split(root: str | Path, test_fold: int) -> tuple[list[CoffeeScene], list[CoffeeScene]]:
    """``(train, test)``: the four other folds for training, ``test_fold`` for testing."""
    (test_fold,) = _check_folds([test_fold])
    train = [f for f in range(1, NUM_FOLDS + 1) if f != test_fold]
    return brazilian_coffee_scenes(root, train), brazilian_coffee_scenes(root, [test_fold])


class BrazilianCoffeeScenes(Dataset):
    """``dataset[i] -> (transform(image), label)``; images load as 3-channel PIL images
    (the channels are green, red and near-infrared, not RGB)."""

    class_names: tuple[str, ...] = CLASS_NAMES

    def __init__(
        self,
        root: str | Path,
        folds: Sequence[int] = (1, 2, 3, 4, 5),
        transform: Callable[[Image.Image], Any] | None = None,
    ) -> None:
        self.items = brazilian_coffee_scenes(root, folds)
        self.transform = transform

    @property
    def labels(self) -> list[int]:
        """Class index of every item (for class-balanced samplers)."""
        return [item.label for item in self.items]

    @property
    def paths(self) -> list[str]:
        """Image path of every item."""
        return [str(item.path) for item in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        item = self.items[index]
        try:
            with Image.open(item.path) as img:
                image = to_mode(img)
        except OSError as exc:
            raise DataError(f"cannot read image {item.path}: {exc}; the file is corrupt, re-extract it") from exc
        return (self.transform(image) if self.transform else image), item.label


def brazilian_coffee_dataset(
    root: str | Path,
    split: str = "train",
    transform: Callable[[Image.Image], Any] | None = None,
    test_fold: int = 1,
) -> BrazilianCoffeeScenes:
    """Dataset-registry loader (``data.name: brazilian_coffee``): ``split="train"`` gives the four
    folds other than ``test_fold`` (1..5), ``split="test"`` gives ``test_fold``. Repeat a run
    with ``data.params.test_fold`` = 1..5 for the 5-fold protocol."""
    (test_fold,) = _check_folds([test_fold])
    if split == "train":
        folds = [f for f in range(1, NUM_FOLDS + 1) if f != test_fold]
    elif split == "test":
        folds = [test_fold]
    else:
        raise DataError(f"unknown split '{split}' for Brazilian Coffee Scenes; use 'train' or 'test'")
    return BrazilianCoffeeScenes(root, folds, transform)
