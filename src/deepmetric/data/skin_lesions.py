"""Dermoscopy datasets as released: ISIC 2016 (part 3), ISIC 2017 (part 3) and PH2.

Each parser returns a :class:`LabelledImages` (paths, integer labels, class names) that any
image dataset of deepmetric can wrap.

* ISIC 2016 part 3: a ground-truth CSV without header, ``image_id,benign|malignant`` (labels may
  also be 0/1), and a folder of ``image_id.jpg``. Classes: benign (0), malignant (1).
* ISIC 2017 part 3: ``ISIC-2017_*_Part3_GroundTruth.csv`` with header
  ``image_id,melanoma,seborrheic_keratosis``; a row with both 0 is a nevus. Classes: nevus (0),
  seborrheic_keratosis (1), melanoma (2).
* PH2: either this project's layout (``labels.csv`` with ``image,diagnosis`` and ``images/``) or
  the original release (``PH2_dataset.txt`` table and ``PH2 Dataset images/IMDxxx/
  IMDxxx_Dermoscopic_Image/IMDxxx.bmp``). Classes: common_nevus (0), atypical_nevus (1),
  melanoma (2). For a benign/malignant view use :func:`binarize`.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from deepmetric.errors import DataError


@dataclass
class LabelledImages:
    """Image files with integer labels indexing ``class_names``."""

    paths: list[Path]
    labels: list[int]
    class_names: list[str]


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise DataError(f"{what} not found: {path}; check the dataset root")
    return path


def _image_file(folder: Path, image_id: str) -> Path:
    for ext in (".jpg", ".jpeg", ".png", ".bmp"):
        if (folder / f"{image_id}{ext}").is_file():
            return folder / f"{image_id}{ext}"
    if (folder / image_id).is_file():
        return folder / image_id
    raise DataError(f"image '{image_id}' listed in the ground truth is missing from {folder}")


def isic2016(ground_truth_csv: str | Path, image_dir: str | Path) -> LabelledImages:
    """ISIC 2016 part 3 (benign vs malignant)."""
    gt, folder = _need(Path(ground_truth_csv), "ISIC 2016 ground-truth CSV"), _need(Path(image_dir), "image folder")
    names = {"benign": 0, "malignant": 1, "0": 0, "1": 1, "0.0": 0, "1.0": 1}
    paths, labels = [], []
    with gt.open(newline="") as handle:
        for line, row in enumerate(csv.reader(handle), start=1):
            if not row or (line == 1 and row[0].strip().lower() in ("image_id", "isic_id", "image")):
                continue
            value = row[1].strip().lower() if len(row) > 1 else ""
            if value not in names:
                raise DataError(f"{gt}:{line}: label '{value}' is not benign/malignant (or 0/1)")
            paths.append(_image_file(folder, row[0].strip()))
            labels.append(names[value])
    if not paths:
        raise DataError(f"{gt} lists no images")
    return LabelledImages(paths, labels, ["benign", "malignant"])


def isic2017(ground_truth_csv: str | Path, image_dir: str | Path) -> LabelledImages:
    """ISIC 2017 part 3 (nevus / seborrheic keratosis / melanoma)."""
    gt, folder = _need(Path(ground_truth_csv), "ISIC 2017 ground-truth CSV"), _need(Path(image_dir), "image folder")
    paths, labels = [], []
    with gt.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"image_id", "melanoma", "seborrheic_keratosis"} - set(reader.fieldnames or [])
        if missing:
            raise DataError(f"{gt} lacks column(s) {sorted(missing)}; expected image_id,melanoma,seborrheic_keratosis")
        for line, row in enumerate(reader, start=2):
            try:
                mel, sk = float(row["melanoma"]), float(row["seborrheic_keratosis"])
            except ValueError as exc:
                raise DataError(f"{gt}:{line}: melanoma/seborrheic_keratosis must be 0 or 1") from exc
            if mel and sk:
                raise DataError(f"{gt}:{line}: an image cannot be both melanoma and seborrheic keratosis")
            paths.append(_image_file(folder, row["image_id"].strip()))
            labels.append(2 if mel else 1 if sk else 0)
    if not paths:
        raise DataError(f"{gt} lists no images")
    return LabelledImages(paths, labels, ["nevus", "seborrheic_keratosis", "melanoma"])


PH2_CLASSES = ["common_nevus", "atypical_nevus", "melanoma"]


def ph2(root: str | Path) -> LabelledImages:
    """PH2 in this project's layout or the original release layout (see module docstring)."""
    root = _need(Path(root), "PH2 folder")
    if (root / "labels.csv").is_file():
        paths, labels = [], []
        with (root / "labels.csv").open(newline="") as handle:
            reader = csv.DictReader(handle)
            if not {"image", "diagnosis"} <= set(reader.fieldnames or []):
                raise DataError(f"{root / 'labels.csv'} needs columns image,diagnosis")
            for line, row in enumerate(reader, start=2):
                if row["diagnosis"] not in PH2_CLASSES:
                    raise DataError(f"{root / 'labels.csv'}:{line}: unknown diagnosis '{row['diagnosis']}'; use {PH2_CLASSES}")
                paths.append(_need(root / "images" / row["image"], "PH2 image"))
                labels.append(PH2_CLASSES.index(row["diagnosis"]))
        return LabelledImages(paths, labels, list(PH2_CLASSES))
    table = next(iter(sorted(root.rglob("PH2_dataset.txt"))), None)
    if table is None:
        raise DataError(f"{root} has neither labels.csv nor the original PH2_dataset.txt")
    images_root = table.parent / "PH2 Dataset images"
    paths, labels = [], []
    # rows look like: || IMD003 ||     ||  0  || ...   (name, histology, clinical diagnosis 0/1/2, ...)
    for line in table.read_text(errors="replace").splitlines():
        cells = [c.strip() for c in line.split("||")]
        cells = [c for c in cells if c != ""] if cells else []
        if not cells or not re.fullmatch(r"IMD\d+", cells[0]):
            continue
        fields = [c.strip() for c in line.split("||")[1:]]
        diagnosis = fields[2].strip() if len(fields) > 2 else ""
        if diagnosis not in ("0", "1", "2"):
            raise DataError(f"{table}: row {cells[0]} has clinical diagnosis '{diagnosis}', expected 0, 1 or 2")
        name = cells[0]
        paths.append(_image_file(images_root / name / f"{name}_Dermoscopic_Image", name))
        labels.append(int(diagnosis))
    if not paths:
        raise DataError(f"{table} lists no images")
    return LabelledImages(paths, labels, list(PH2_CLASSES))


def binarize(data: LabelledImages, malignant: str = "melanoma") -> LabelledImages:
    """Relabel as benign (0) vs ``malignant`` (1)."""
    if malignant not in data.class_names:
        raise DataError(f"class '{malignant}' not in {data.class_names}")
    m = data.class_names.index(malignant)
    return LabelledImages(list(data.paths), [int(y == m) for y in data.labels], ["benign", malignant])
