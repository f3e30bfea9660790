"""The four standard deep-metric-learning benchmarks, read from their official archive layouts.

Splits are the class-disjoint ones used throughout the literature (METHODS.md "Shared pieces"):

* CUB-200-2011 (Wah et al. 2011): classes 1-100 train, 101-200 test. Layout:
  ``CUB_200_2011/{images.txt, image_class_labels.txt, classes.txt, images/...}``.
* Cars196 (Krause et al. 2013): classes 1-98 train, 99-196 test. Layout: ``cars_annos.mat``
  (devkit annotations: ``annotations`` with ``relative_im_path`` and ``class``; ``class_names``)
  next to ``car_ims/``; the mat file may also sit in ``devkit/``.
* Stanford Online Products (Oh Song et al. 2016): ``Ebay_train.txt`` (11,318 classes) and
  ``Ebay_test.txt`` (11,316 classes), columns ``image_id class_id super_class_id path``.
* In-Shop Clothes Retrieval (Liu et al. 2016): ``list_eval_partition.txt`` (count line, header
  line, then ``image_name item_id evaluation_status`` with status train/query/gallery).
  ``split="test"`` returns query and gallery together with ``is_query`` set, so evaluation
  ranks the gallery for each query; ``"query"`` and ``"gallery"`` return one side.

``root`` may be the dataset folder itself or its parent. Labels are re-indexed ``0..C-1`` within
each split; ``class_names`` keep the official names or ids.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deepmetric.data.image_dataset import ImageFileDataset, Transform, index_labels
from deepmetric.errors import ConfigError, DataError


def _find(root: str | Path, marker: str, subfolders: tuple[str, ...]) -> Path:
    """The folder holding ``marker``: ``root`` or one of its ``subfolders``."""
    root = Path(root).expanduser()
    for folder in (root, *(root / s for s in subfolders)):
        if (folder / marker).is_file():
            return folder
    raise DataError(
        f"{marker} not found in {root} (looked in {', '.join(str(root / s) for s in ('.', *subfolders))}); "
        "point root at the unpacked official archive"
    )


def _check_split(split: str, allowed: tuple[str, ...]) -> None:
    if split not in allowed:
        raise ConfigError(f"unknown split '{split}'; use {', '.join(allowed)}")


def _read_rows(path: Path, min_fields: int, skip: int = 0) -> list[list[str]]:
    rows = []
    for number, line in enumerate(path.read_text().splitlines()[skip:], start=skip + 1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) < min_fields:
            raise DataError(f"{path} line {number} has {len(fields)} fields, expected {min_fields}: {line!r}")
        rows.append(fields)
    return rows


def _dataset(paths, keys, names, transform, skip_bad, metadata=None) -> ImageFileDataset:
    labels, class_names = index_labels(keys, names)
    return ImageFileDataset(paths, labels, class_names, transform=transform, skip_bad=skip_bad, metadata=metadata)


def cub200_dataset(
    root: str | Path, split: str = "train", transform: Transform | None = None, skip_bad: bool = False
) -> ImageFileDataset:
    """CUB-200-2011, ``split`` ``"train"`` (classes 1-100), ``"test"`` (101-200) or ``"all"``."""
    _check_split(split, ("train", "test", "all"))
    folder = _find(root, "images.txt", ("CUB_200_2011",))
    images = {r[0]: r[1] for r in _read_rows(folder / "images.txt", 2)}
    classes = {r[0]: int(r[1]) for r in _read_rows(folder / "image_class_labels.txt", 2)}
    names = {}
    if (folder / "classes.txt").is_file():
        names = {int(r[0]): r[1] for r in _read_rows(folder / "classes.txt", 2)}
    missing = sorted(set(images) - set(classes))
    if missing:
        raise DataError(f"image ids {missing[:3]} of images.txt have no class in image_class_labels.txt")
    wanted = {"train": range(1, 101), "test": range(101, 201), "all": range(1, 201)}[split]
    ids = [i for i in images if classes[i] in wanted]
    keys = [classes[i] for i in ids]
    return _dataset(
        [folder / "images" / images[i] for i in ids], keys, [names.get(k, str(k)) for k in keys], transform, skip_bad
    )


def cars196_dataset(
    root: str | Path, split: str = "train", transform: Transform | None = None, skip_bad: bool = False
) -> ImageFileDataset:
    """Cars196, ``split`` ``"train"`` (classes 1-98), ``"test"`` (99-196) or ``"all"``."""
    from scipy.io import loadmat

    _check_split(split, ("train", "test", "all"))
    folder = _find(root, "cars_annos.mat", ("devkit", "cars196", "CARS196"))
    try:
        mat = loadmat(folder / "cars_annos.mat", squeeze_me=True)
    except Exception as exc:  # noqa: BLE001 - scipy raises several types for bad files
        raise DataError(f"cannot read {folder / 'cars_annos.mat'} ({exc}); re-download the devkit") from exc
    if "annotations" not in mat:
        raise DataError(f"{folder / 'cars_annos.mat'} has no 'annotations' variable; is it the Cars196 cars_annos.mat?")
    ann = np.atleast_1d(mat["annotations"])
    if ann.dtype.names is None or not {"relative_im_path", "class"} <= set(ann.dtype.names):
        raise DataError(f"{folder / 'cars_annos.mat'} annotations lack relative_im_path/class fields")
    class_names = [str(n) for n in np.atleast_1d(mat.get("class_names", np.array([])))]
    rel = [str(p) for p in ann["relative_im_path"]]
    cls = [int(c) for c in ann["class"]]
    wanted = {"train": range(1, 99), "test": range(99, 197), "all": range(1, 197)}[split]
    # images live next to the mat file, or one level up when the mat file is in devkit/
    base = folder if (folder / rel[0]).exists() or folder == Path(root).expanduser() else folder.parent
    keep = [i for i, c in enumerate(cls) if c in wanted]
    keys = [cls[i] for i in keep]
    names = [class_names[k - 1] if 0 < k <= len(class_names) else str(k) for k in keys]
    return _dataset([base / rel[i] for i in keep], keys, names, transform, skip_bad)


def sop_dataset(
    root: str | Path, split: str = "train", transform: Transform | None = None, skip_bad: bool = False
) -> ImageFileDataset:
    """Stanford Online Products, ``split`` ``"train"`` (Ebay_train.txt) or ``"test"`` (Ebay_test.txt)."""
    _check_split(split, ("train", "test"))
    name = "Ebay_train.txt" if split == "train" else "Ebay_test.txt"
    folder = _find(root, name, ("Stanford_Online_Products",))
    rows = _read_rows(folder / name, 4, skip=1)
    return _dataset([folder / r[3] for r in rows], [int(r[1]) for r in rows], None, transform, skip_bad)


def inshop_dataset(
    root: str | Path, split: str = "train", transform: Transform | None = None, skip_bad: bool = False
) -> ImageFileDataset:
    """In-Shop Clothes, ``split`` ``"train"``, ``"test"`` (query + gallery, ``is_query`` set),
    ``"query"`` or ``"gallery"``."""
    _check_split(split, ("train", "test", "query", "gallery"))
    folder = _find(root, "list_eval_partition.txt", ("Eval", "InShop", "inshop"))
    rows = _read_rows(folder / "list_eval_partition.txt", 3, skip=2)
    statuses = {"train": {"train"}, "test": {"query", "gallery"}, "query": {"query"}, "gallery": {"gallery"}}[split]
    rows = [r for r in rows if r[2] in statuses]
    if not rows:
        raise DataError(f"list_eval_partition.txt in {folder} has no rows with status {sorted(statuses)}")
    image_base = folder if (folder / rows[0][0]).exists() else folder.parent
    metadata = None
    if split == "test":
        metadata = {"is_query": [r[2] == "query" for r in rows], "is_gallery": [r[2] == "gallery" for r in rows]}
    return _dataset([image_base / r[0] for r in rows], [r[1] for r in rows], None, transform, skip_bad, metadata)
