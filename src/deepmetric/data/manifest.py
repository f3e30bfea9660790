"""CSV manifest datasets: any image collection described by one CSV file.

Columns (a header row is required; order free):

========== ======== =================================================================
column     required meaning
========== ======== =================================================================
path       yes      image file, relative to the CSV's folder (or absolute)
label      yes      class: a name or a number (mapped to indices 0..C-1, sorted)
split      no       e.g. ``train`` / ``val`` / ``test``: :func:`csv_dataset` keeps one
is_query   no       1/0, true/false, yes/no: item is a query (fixed query/gallery protocols)
is_gallery no       same, item is in the gallery
camera     no       camera id (re-identification: same-camera matches are excluded)
sequence   no       sequence / tracklet id
========== ======== =================================================================

Example::

    path,label,split,is_query,is_gallery
    images/0001.jpg,cat,train,0,0
    images/0002.jpg,dog,test,1,0

Without a ``split`` column, :func:`csv_dataset` (the ``csv`` loader) splits the rows with
``split_seed`` (null = the run ``seed``): per class or class-disjoint (``split_by``), or, with
``fold`` (the k-fold protocol sets ``fold``, ``n_folds`` and ``split_seed``), fold ``fold`` of a
stratified k-fold split (:func:`deepmetric.data.splits.fold_indices`) is the test split.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from deepmetric.data.image_dataset import ImageFileDataset, Transform, index_labels
from deepmetric.data.splits import fold_indices, split_indices
from deepmetric.errors import ConfigError, DataError

REQUIRED_COLUMNS = ("path", "label")
OPTIONAL_COLUMNS = ("split", "is_query", "is_gallery", "camera", "sequence")
_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "false", "no", "n", "f", ""}


def _flag(value: str, column: str, row: int, csv_path: Path) -> bool:
    text = value.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise DataError(f"{csv_path} row {row}: column '{column}' has '{value}'; use 1/0, true/false or yes/no")


def _label_key(values: list[str]) -> list[Any]:
    """Integer labels when every label is an integer (so 2 sorts before 10), else the strings."""
    try:
        return [int(v) for v in values]
    except ValueError:
        return values


def read_manifest(csv_path: str | Path) -> list[dict[str, str]]:
    """The rows of a manifest as dicts, after checking the header."""
    csv_path = Path(csv_path).expanduser()
    if not csv_path.is_file():
        raise DataError(f"manifest {csv_path} does not exist; pass the path of a CSV file with columns path,label")
    with csv_path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise DataError(
                f"manifest {csv_path} lacks the column(s) {', '.join(missing)} (found: {', '.join(header) or 'none'}); "
                "the first line must be a header naming at least: path,label"
            )
        rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    if not rows:
        raise DataError(f"manifest {csv_path} has a header but no rows; add one line per image")
    for number, row in enumerate(rows, start=2):
        if not row.get("path") or not row.get("label"):
            raise DataError(f"{csv_path} row {number}: empty path or label; every row needs both")
    return rows


class CSVManifestDataset(ImageFileDataset):
    """Images listed in a CSV manifest (see the module docstring for the columns).

    Args:
        csv_path: the manifest.
        split: keep the rows whose ``split`` column equals this value (None keeps all rows).
        transform: applied to each RGB PIL image.
        skip_bad: leave unreadable images out (warned, counted in ``skipped``).
    """

    def __init__(
        self,
        csv_path: str | Path,
        split: str | None = None,
        transform: Transform | None = None,
        skip_bad: bool = False,
        rows: list[dict[str, str]] | None = None,
    ) -> None:
        csv_path = Path(csv_path).expanduser()
        rows = read_manifest(csv_path) if rows is None else rows
        if split is not None:
            if "split" not in rows[0]:
                raise DataError(f"manifest {csv_path} has no 'split' column, so split='{split}' cannot be selected")
            available = sorted({r["split"] for r in rows})
            rows = [r for r in rows if r["split"] == split]
            if not rows:
                raise DataError(f"manifest {csv_path} has no rows with split '{split}' (found: {', '.join(available)})")
        base = csv_path.parent
        paths = [Path(r["path"]) if Path(r["path"]).is_absolute() else base / r["path"] for r in rows]
        labels, class_names = index_labels(_label_key([r["label"] for r in rows]))
        metadata: dict[str, list[Any]] = {}
        for column, attribute in (("is_query", "is_query"), ("is_gallery", "is_gallery")):
            if column in rows[0]:
                metadata[attribute] = [_flag(r[column], column, i + 2, csv_path) for i, r in enumerate(rows)]
        for column, attribute in (("camera", "cameras"), ("sequence", "sequences")):
            if column in rows[0]:
                metadata[attribute] = _label_key([r[column] for r in rows])
        super().__init__(paths, labels, class_names, transform=transform, skip_bad=skip_bad, metadata=metadata)
        self.csv_path = csv_path


def csv_dataset(
    root: str | Path,
    split: str | None = None,
    transform: Transform | None = None,
    seed: int = 0,
    test_fraction: float = 0.5,
    split_by: str = "classes",
    skip_bad: bool = False,
    fold: int | None = None,
    n_folds: int = 5,
    split_seed: int | None = None,
) -> CSVManifestDataset:
    """The ``split`` of the manifest ``root`` (the ``csv`` loader of the config).

    With a ``split`` column the rows marked ``split`` are kept; without one, ``"train"`` and
    ``"test"`` are a split seeded by ``split_seed`` (null = ``seed``): fold ``fold`` of
    ``n_folds`` stratified folds when ``fold`` is given, else class-disjoint
    (``split_by="classes"``) or per class (``"items"``); ``None``/``"all"`` keeps every row.
    A ``split`` column with ``fold`` or ``split_seed`` is a :class:`ConfigError` (the split is fixed).
    """
    csv_path = Path(root).expanduser()
    rows = read_manifest(csv_path)
    if "split" in rows[0] and (fold is not None or split_seed is not None):
        raise ConfigError(
            f"manifest {csv_path} has a 'split' column, so its train/test split is fixed and k-fold or repeated "
            "splits are impossible; drop the column, or use protocol.name=single"
        )
    if split in (None, "all"):
        return CSVManifestDataset(csv_path, None, transform, skip_bad, rows=rows)
    if "split" in rows[0]:
        return CSVManifestDataset(csv_path, split, transform, skip_bad, rows=rows)
    labels = [r["label"] for r in rows]
    seed = seed if split_seed is None else int(split_seed)
    if fold is not None:
        keep = fold_indices(labels, split, fold, n_folds, seed)
    else:
        keep = split_indices(labels, split, test_fraction=test_fraction, seed=seed, split_by=split_by)
    return CSVManifestDataset(csv_path, None, transform, skip_bad, rows=[rows[i] for i in keep])
