"""Re-ID dataset loaders of the registry (``data.name``): MARS, PRID2011, iLIDS-VID, Market-1501
and a CSV manifest of tracklets, following the loader contract of :mod:`deepmetric.data.registry`.

Every loader returns a :class:`~deepmetric.data.tracklets.TrackletDataset`:

* ``split="train"``: the training tracklets. With the model's training transform (or none) the
  items are TRAIN-mode clips ``(seq_len, C, H, W)`` (restricted random sampling, re-ID
  augmentation) labelled by identity index; with the model's evaluation transform
  (``transform.train is False``, see :class:`~deepmetric.data.tracklets.FrameNormalize`) they
  are TEST-mode items, so the validation identities that the trainer carves from the training
  split are embedded from all their frames.
* ``split="test"``: the query tracklets followed by the gallery tracklets in TEST mode (all
  frames, padded batches), with ``is_query``, ``cameras``, ``persons`` (original ids: -1 junk and
  0 distractors kept as MARS and Market-1501 define them) and ``labels``.

``data.params`` (each loader takes those that apply to it):

* ``seq_len`` (T, frames per training clip), ``height``, ``width`` (frame size), ``hflip``
  (training flip probability), ``pad`` (training random crop after zero-padding by this many
  pixels): the frame pipeline (:func:`~deepmetric.data.tracklets.frame_pipeline`);
* ``prid2011`` / ``ilidsvid`` / ``tracklet_csv``: ``min_frames`` (keep tracklets with at least
  this many frames), ``test_fraction`` (identities held out for testing), ``split_seed`` (seed of
  that identity split; null = the run seed; the repeated-splits protocol sets it per trial),
  ``query_camera`` (the query is this camera's test tracklets, the gallery the other cameras');
  only people seen by at least two cameras are used (the PRID2011 / iLIDS-VID protocol).

``mars`` and ``market1501`` use the release's own train / query / gallery lists; ``market1501``
is image re-ID: every image is a one-frame tracklet (clips of one frame).

A data root with the wrong layout is a one-line :class:`~deepmetric.errors.DataError` naming
the ``data.name`` whose layout it has, when it has one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image
from torch import Tensor

from deepmetric.data import tracklets as tk
from deepmetric.data.market1501 import market1501_tracklets
from deepmetric.data.tracklets import Tracklet, TrackletDataset, frame_pipeline, is_evaluation_transform
from deepmetric.errors import ConfigError, DataError

__all__ = [
    "detect_layout",
    "identity_split",
    "ilidsvid_dataset",
    "market1501_dataset",
    "mars_dataset",
    "prid2011_dataset",
    "tracklet_csv_dataset",
    "tracklet_split_dataset",
]

Transform = Callable[[Image.Image], Tensor]

#: data.name -> what its data.root looks like (for wrong-layout messages)
LAYOUTS = {
    "mars": "a folder with bbox_train/, bbox_test/ and info/",
    "market1501": "a folder with bounding_box_train/, bounding_box_test/ and query/",
    "prid2011": "a folder with [prid_2011/]multi_shot/cam_a/ and cam_b/",
    "ilidsvid": "a folder with [i-LIDS-VID/]sequences/cam1/ and cam2/",
    "tracklet_csv": "a CSV file with the columns path,person,camera,sequence",
}


def detect_layout(root: str | Path) -> str | None:
    """The ``data.name`` whose layout ``root`` has (see :data:`LAYOUTS`), or None."""
    root = Path(root)
    if root.is_file():
        return "tracklet_csv" if root.suffix.lower() == ".csv" else None
    if (root / "info").is_dir() and ((root / "bbox_train").is_dir() or (root / "bbox_test").is_dir()):
        return "mars"
    if (root / "bounding_box_train").is_dir() or (root / "query").is_dir():
        return "market1501"
    if (root / "multi_shot").is_dir() or (root / "prid_2011" / "multi_shot").is_dir():
        return "prid2011"
    if (root / "sequences").is_dir() or (root / "i-LIDS-VID" / "sequences").is_dir():
        return "ilidsvid"
    return None


def _check_layout(root: str | Path, name: str) -> Path:
    """``root`` as a Path; a DataError when it does not have ``name``'s layout."""
    path = Path(root).expanduser()
    if not path.exists():
        raise DataError(f"data.root '{path}' does not exist; set it to {LAYOUTS[name]} (data.name={name})")
    found = detect_layout(path)
    if found != name:
        fits = f"; it looks like data.name={found}" if found is not None else ""
        raise DataError(f"data.root '{path}' is not a {name} root{fits}; data.name={name} needs {LAYOUTS[name]}")
    return path


def _check_split(split: str) -> None:
    if split not in ("train", "test"):
        raise ConfigError(f"a re-ID loader has the splits 'train' and 'test', got '{split}'")


def tracklet_split_dataset(
    split: str,
    train: Sequence[Tracklet] | None = None,
    query: Sequence[Tracklet] | None = None,
    gallery: Sequence[Tracklet] | None = None,
    transform: Transform | None = None,
    seq_len: int = 8,
    height: int = 256,
    width: int = 128,
    hflip: float = 0.5,
    pad: int = 10,
) -> TrackletDataset:
    """The dataset of ``split`` from parsed tracklets (``train`` for "train", ``query`` and
    ``gallery`` for "test"), in the mode the module docstring gives. Every loader ends here;
    your own tracklets (e.g. in-memory frames) can use it too."""
    _check_split(split)
    if split == "train":
        if not train:
            raise DataError("there are no training tracklets; check the data root and the split parameters")
        training = not is_evaluation_transform(transform)
        pipeline = frame_pipeline(height, width, training, hflip, pad, transform)
        return TrackletDataset(train, pipeline, seq_len, mode="train" if training else "test")
    if not query or not gallery:
        raise DataError(
            f"the test split needs query and gallery tracklets, got {len(query or [])} and {len(gallery or [])}; "
            "check the data root and data.params.query_camera"
        )
    pipeline = frame_pipeline(height, width, False, hflip, pad, transform)
    flags = [True] * len(query) + [False] * len(gallery)
    return TrackletDataset([*query, *gallery], pipeline, seq_len, mode="test", is_query=flags)


def identity_split(
    tracklets: Sequence[Tracklet], split: str, test_fraction: float, split_seed: int, query_camera: int,
    min_frames: int = 0,
) -> tuple[list[Tracklet], list[Tracklet], list[Tracklet]]:
    """(train, query, gallery) of a two-camera dataset: tracklets with at least ``min_frames``
    frames of people seen by two or more cameras, identities split by ``split_seed``
    (``test_fraction`` of them for testing), query = the test tracklets of ``query_camera``,
    gallery = the other test tracklets. Only the lists ``split`` needs are filled."""
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"data.params.test_fraction must be in (0, 1), got {test_fraction}")
    if min_frames < 0:
        raise ConfigError(f"data.params.min_frames must be >= 0, got {min_frames}")
    kept = [t for t in tracklets if len(t.frames) >= min_frames]
    cams: dict[int, set[int]] = {}
    for t in kept:
        cams.setdefault(t.person, set()).add(t.camera)
    kept = [t for t in kept if len(cams[t.person]) > 1]
    if not kept:
        raise DataError(
            f"no person with tracklets of >= {min_frames} frames is seen by two cameras; cross-camera re-ID "
            "needs some (lower data.params.min_frames or check the camera column)"
        )
    train, test = tk.split_identities(kept, test_fraction, split_seed)
    if split == "train":
        return train, [], []
    query = [t for t in test if t.camera == query_camera]
    gallery = [t for t in test if t.camera != query_camera]
    if not query:
        cameras = sorted({t.camera for t in test})
        raise DataError(
            f"query camera {query_camera} has no test tracklets; the test cameras are {cameras}: set "
            "data.params.query_camera to one of them"
        )
    return train, query, gallery


def _frame_params(seq_len: int, height: int, width: int, hflip: float, pad: int) -> dict[str, Any]:
    return {"seq_len": seq_len, "height": height, "width": width, "hflip": hflip, "pad": pad}


def mars_dataset(
    root: str, split: str = "train", transform: Transform | None = None, seq_len: int = 8, height: int = 256,
    width: int = 128, hflip: float = 0.5, pad: int = 10,
) -> TrackletDataset:
    """MARS (Zheng et al., ECCV 2016): its train tracklets, and its query / gallery tracklets
    (``info/query_IDX.mat``); see :func:`~deepmetric.data.tracklets.mars_tracklets`."""
    _check_split(split)
    path = _check_layout(root, "mars")
    params = _frame_params(seq_len, height, width, hflip, pad)
    if split == "train":
        return tracklet_split_dataset("train", train=tk.mars_tracklets(path, "train"), transform=transform, **params)
    return tracklet_split_dataset("test", query=tk.mars_tracklets(path, "query"),
                                  gallery=tk.mars_tracklets(path, "gallery"), transform=transform, **params)


def market1501_dataset(
    root: str, split: str = "train", transform: Transform | None = None, height: int = 256, width: int = 128,
    hflip: float = 0.5, pad: int = 10,
) -> TrackletDataset:
    """Market-1501 / DukeMTMC-reID image re-ID: every image is a one-frame tracklet (training
    clips of one frame); the query and gallery are the release's ``query/`` and
    ``bounding_box_test/`` (junk and distractors kept), training drops them."""
    _check_split(split)
    path = _check_layout(root, "market1501")
    params = _frame_params(1, height, width, hflip, pad)
    if split == "train":
        return tracklet_split_dataset("train", train=market1501_tracklets(path, "train"), transform=transform, **params)
    return tracklet_split_dataset("test", query=market1501_tracklets(path, "query"),
                                  gallery=market1501_tracklets(path, "gallery"), transform=transform, **params)


def _two_camera_dataset(
    tracklets: Sequence[Tracklet], split: str, transform: Transform | None, seed: int, split_seed: int | None,
    test_fraction: float, query_camera: int, min_frames: int, params: dict[str, Any],
) -> TrackletDataset:
    train, query, gallery = identity_split(
        tracklets, split, test_fraction, seed if split_seed is None else split_seed, query_camera, min_frames
    )
    return tracklet_split_dataset(split, train=train, query=query, gallery=gallery, transform=transform, **params)


def prid2011_dataset(
    root: str, split: str = "train", transform: Transform | None = None, seed: int = 0, seq_len: int = 8,
    height: int = 256, width: int = 128, hflip: float = 0.5, pad: int = 10, min_frames: int = 0,
    test_fraction: float = 0.5, split_seed: int | None = None, query_camera: int = 0,
) -> TrackletDataset:
    """PRID2011 multi-shot (cameras: cam_a = 0, cam_b = 1); the usual protocol keeps the people
    seen by both cameras with at least 21 frames (``min_frames: 21``) and halves them at random
    (10 trials)."""
    _check_split(split)
    path = _check_layout(root, "prid2011")
    return _two_camera_dataset(tk.prid2011_tracklets(path), split, transform, seed, split_seed, test_fraction,
                               query_camera, min_frames, _frame_params(seq_len, height, width, hflip, pad))


def ilidsvid_dataset(
    root: str, split: str = "train", transform: Transform | None = None, seed: int = 0, seq_len: int = 8,
    height: int = 256, width: int = 128, hflip: float = 0.5, pad: int = 10, min_frames: int = 0,
    test_fraction: float = 0.5, split_seed: int | None = None, query_camera: int = 0,
) -> TrackletDataset:
    """iLIDS-VID (cameras: cam1 = 0, cam2 = 1; 300 people), halved at random (10 trials)."""
    _check_split(split)
    path = _check_layout(root, "ilidsvid")
    return _two_camera_dataset(tk.ilidsvid_tracklets(path), split, transform, seed, split_seed, test_fraction,
                               query_camera, min_frames, _frame_params(seq_len, height, width, hflip, pad))


def tracklet_csv_dataset(
    root: str, split: str = "train", transform: Transform | None = None, seed: int = 0, seq_len: int = 8,
    height: int = 256, width: int = 128, hflip: float = 0.5, pad: int = 10, min_frames: int = 0,
    test_fraction: float = 0.5, split_seed: int | None = None, query_camera: int = 0,
) -> TrackletDataset:
    """Tracklets of a CSV manifest (``data.root``; one row per frame: ``path,person,camera,sequence``,
    paths relative to the CSV), split by identity like PRID2011 and iLIDS-VID."""
    _check_split(split)
    path = _check_layout(root, "tracklet_csv")
    return _two_camera_dataset(tk.csv_tracklets(path), split, transform, seed, split_seed, test_fraction,
                               query_camera, min_frames, _frame_params(seq_len, height, width, hflip, pad))
