"""Image-based person re-identification: the Market-1501 layout (Zheng et al., ICCV 2015,
"Scalable Person Re-identification: A Benchmark").

Layout: ``ROOT/bounding_box_train/``, ``ROOT/bounding_box_test/`` (the gallery) and
``ROOT/query/``, each holding JPEG crops named ``PPPP_cCsS_FFFFFF_BB.jpg``: person ``PPPP``
(``-1`` = junk, ``0000`` = distractor), camera ``C``, sequence ``S``, frame ``FFFFFF``,
bounding box ``BB``. For example ``0002_c1s1_000451_03.jpg`` is person 2 seen by camera 1.
DukeMTMC-reID uses the same folders and ``PPPP_cC_fFFFFFFF.jpg`` names, which are accepted too.

Each image becomes a one-frame :class:`~deepmetric.data.tracklets.Tracklet`, so the video
re-ID pipeline applies unchanged: ``data.name: market1501`` (clips of one frame, see
:mod:`deepmetric.data.reid_datasets`), ``model.name: tracklet`` and ``eval.protocol: reid``
(:func:`deepmetric.evaluation.reid.evaluate_reid`: junk (-1) gallery images are ignored by the
evaluation, distractors (0) stay as negatives).
"""

from __future__ import annotations

import re
from pathlib import Path

from deepmetric.data.tracklets import Tracklet
from deepmetric.errors import DataError

__all__ = ["MARKET_SPLITS", "market1501_tracklets", "parse_market_name"]

#: split name -> folder of the release
MARKET_SPLITS = {"train": "bounding_box_train", "gallery": "bounding_box_test", "query": "query"}

_NAME = re.compile(r"^(-?\d+)_c(\d+)")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def parse_market_name(name: str) -> tuple[int, int]:
    """``(person, camera)`` from a Market-1501 / DukeMTMC-reID file name.

    >>> parse_market_name("0002_c1s1_000451_03.jpg")
    (2, 1)
    >>> parse_market_name("-1_c3s2_012345_01.jpg")
    (-1, 3)
    """
    match = _NAME.match(Path(name).name)
    if match is None:
        raise DataError(
            f"cannot read person and camera from the file name '{name}'; Market-1501 names look like "
            "0002_c1s1_000451_03.jpg (person 2, camera 1)"
        )
    return int(match.group(1)), int(match.group(2))


def market1501_tracklets(root: str | Path, split: str = "train", drop_junk: bool | None = None) -> list[Tracklet]:
    """One-frame tracklets of a Market-1501 ``split`` (``train``, ``query`` or ``gallery``), sorted
    by file name.

    ``drop_junk`` removes identities -1 (junk) and 0 (distractors); by default it is True for
    ``train`` (they are not people to learn) and False for ``query``/``gallery`` (the evaluation
    needs them: junk is ignored, distractors count as wrong matches).
    """
    root = Path(root)
    if split not in MARKET_SPLITS:
        raise DataError(f"unknown Market-1501 split '{split}'; use 'train', 'query' or 'gallery'")
    folder = root / MARKET_SPLITS[split]
    if not folder.is_dir():
        raise DataError(
            f"Market-1501 folder missing: {folder}; data.root must be the folder holding bounding_box_train/, "
            "bounding_box_test/ and query/"
        )
    if drop_junk is None:
        drop_junk = split == "train"
    out = []
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES):
        person, camera = parse_market_name(path.name)
        if drop_junk and person <= 0:
            continue
        out.append(Tracklet(person, camera, [path]))
    if not out:
        raise DataError(f"Market-1501 split '{split}' has no images in {folder}; the folder needs .jpg/.png crops")
    return out
