"""Video re-identification data: tracklets (one person, one camera, a sequence of frames).

* Layout parsers -> ``list[Tracklet]``: MARS (Zheng et al., ECCV 2016), PRID2011 (Hirzer et al.,
  SCIA 2011), iLIDS-VID (Wang et al., ECCV 2014) and a CSV manifest (one row per frame, columns
  ``path,person,camera,sequence``); :func:`split_identities` halves a set by person.
* :class:`TrackletDataset` turns tracklets into items, in one of two modes:

  - ``"train"``: a clip ``(T, C, H, W)`` of ``seq_len`` frames drawn by restricted random
    sampling (Li et al., CVPR 2018, "Diversity Regularized Spatiotemporal Attention"): the
    tracklet is cut into T equal chunks and one frame is drawn from each, so a clip spans the
    whole sequence. The draw uses the global numpy RNG, which the trainer seeds per item
    (:class:`~deepmetric.training.views.SeededItems`), so clips are reproducible and resumable;
    the default collate stacks them into ``(B, T, C, H, W)``.
  - ``"test"``: ALL frames ``(n_frames, C, H, W)``; its ``collate_fn`` (:func:`pad_tracklets`)
    pads a batch to ``((clips (B, T_max, C, H, W), mask (B, T_max) bool), labels)``.

* The frame pipeline (:func:`frame_pipeline`): the DATA owns the geometry and the re-ID
  augmentation (resize to ``height x width``; in training a horizontal flip with probability
  ``hflip`` and a random crop after zero-padding by ``pad`` pixels); the MODEL owns tensor
  conversion and normalisation (its ``train_transform()`` / ``eval_transform()`` return a
  :class:`FrameNormalize` with the backbone's mean and std). ``FrameNormalize.train`` also tells
  a loader asked for the training tracklets whether the caller wants training clips or
  evaluation items (the validation split carved from the training identities is evaluated on
  all frames, like the test split).
"""

from __future__ import annotations

import csv
import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import transforms as T
from torchvision.transforms import functional as TF

from deepmetric.errors import ConfigError, DataError

__all__ = [
    "FrameNormalize",
    "Tracklet",
    "TrackletDataset",
    "csv_tracklets",
    "frame_pipeline",
    "ilidsvid_tracklets",
    "is_evaluation_transform",
    "load_frame",
    "mars_tracklets",
    "pad_tracklets",
    "prid2011_tracklets",
    "restricted_random_indices",
    "split_identities",
]


@dataclass
class Tracklet:
    """Frames of one person seen by one camera; frames are file paths or in-memory images."""

    person: int
    camera: int
    frames: list[Any] = field(default_factory=list)


def _check_root(root: Path) -> Path:
    if not root.exists():
        raise DataError(f"dataset folder not found: {root}; set data.root to the folder of the dataset")
    return root


def _loadmat(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(f"MARS info file missing: {path}; the 'info' folder of the MARS release is required")
    from scipy.io import loadmat

    return loadmat(str(path))


def _read_names(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"MARS name list missing: {path}; the 'info' folder of the MARS release is required")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def mars_tracklets(root: str | Path, split: str = "train") -> list[Tracklet]:
    """Tracklets of the MARS release: ``split`` is ``train``, ``query`` or ``gallery``.

    Layout: ``bbox_train/PID/NAME.jpg``, ``bbox_test/PID/NAME.jpg`` and ``info/`` with
    ``train_name.txt``, ``test_name.txt``, ``tracks_train_info.mat``, ``tracks_test_info.mat``
    (rows ``[start, end, person, camera]``, 1-based into the name lists) and ``query_IDX.mat``
    (1-based rows of the test tracks). Gallery = test tracks not in the query list; identity -1
    marks junk and 0 distractors, both kept (the evaluation handles them).
    """
    root = _check_root(Path(root))
    if split not in ("train", "query", "gallery"):
        raise DataError(f"unknown MARS split '{split}'; use 'train', 'query' or 'gallery'")
    info = root / "info"
    part = "train" if split == "train" else "test"
    names = _read_names(info / f"{part}_name.txt")
    tracks = _loadmat(info / f"tracks_{part}_info.mat")[f"track_{part}_info"].astype(int)
    rows = list(range(len(tracks)))
    if split != "train":
        query = set((_loadmat(info / "query_IDX.mat")["query_IDX"].astype(int).ravel() - 1).tolist())
        rows = [r for r in rows if (r in query) == (split == "query")]
    out = []
    for r in rows:
        start, end, person, camera = tracks[r]
        frames = [root / f"bbox_{part}" / name[:4] / name for name in names[start - 1:end]]
        out.append(Tracklet(int(person), int(camera), frames))
    if not out:
        raise DataError(f"MARS split '{split}' under {root} is empty; check info/ against the release")
    return out


def _two_camera_layout(base: Path, cams: Sequence[str], prefix: str, pattern: str, min_frames: int) -> list[Tracklet]:
    out = []
    for camera, cam in enumerate(cams):
        cam_dir = base / cam
        if not cam_dir.is_dir():
            raise DataError(f"camera folder missing: {cam_dir}; data.root must hold the release's camera folders")
        for person_dir in sorted(p for p in cam_dir.iterdir() if p.is_dir() and p.name.startswith(prefix)):
            frames = sorted(person_dir.glob(pattern))
            if len(frames) >= min_frames:
                out.append(Tracklet(int(person_dir.name[len(prefix):]), camera, frames))
    if not out:
        raise DataError(f"no tracklets found under {base}; the camera folders hold no {prefix}* folders of {pattern} frames")
    return out


def prid2011_tracklets(root: str | Path, min_frames: int = 0) -> list[Tracklet]:
    """PRID2011 multi-shot: ``[prid_2011/]multi_shot/cam_a|cam_b/person_XXXX/*.png``.

    The usual protocol keeps persons seen by both cameras with at least 21 frames
    (``min_frames=21``) and splits them in half at random (see :func:`split_identities`).
    """
    root = _check_root(Path(root))
    base = root / "prid_2011" / "multi_shot" if (root / "prid_2011").is_dir() else root / "multi_shot"
    return _two_camera_layout(base, ["cam_a", "cam_b"], "person_", "*.png", min_frames)


def ilidsvid_tracklets(root: str | Path) -> list[Tracklet]:
    """iLIDS-VID: ``[i-LIDS-VID/]sequences/cam1|cam2/personXXX/*.png`` (300 people, 2 cameras)."""
    root = _check_root(Path(root))
    base = root / "i-LIDS-VID" / "sequences" if (root / "i-LIDS-VID").is_dir() else root / "sequences"
    return _two_camera_layout(base, ["cam1", "cam2"], "person", "*.png", 0)


def csv_tracklets(manifest: str | Path) -> list[Tracklet]:
    """Tracklets from a CSV with one row per frame: ``path,person,camera,sequence`` (paths relative
    to the CSV). Frames of one (person, camera, sequence) keep the file's row order."""
    manifest = Path(manifest)
    if not manifest.is_file():
        raise DataError(f"manifest not found: {manifest}; set data.root to the CSV file (path,person,camera,sequence)")
    groups: dict[tuple[int, int, str], list[Path]] = defaultdict(list)
    with manifest.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"path", "person", "camera", "sequence"} - set(reader.fieldnames or [])
        if missing:
            raise DataError(f"manifest {manifest} lacks column(s) {sorted(missing)}; need path,person,camera,sequence")
        for line, row in enumerate(reader, start=2):
            try:
                key = (int(row["person"]), int(row["camera"]), row["sequence"])
            except ValueError as exc:
                raise DataError(f"{manifest}:{line}: person and camera must be integers ({exc})") from exc
            groups[key].append(manifest.parent / row["path"])
    if not groups:
        raise DataError(f"manifest {manifest} lists no frames; add one row per frame")
    return [Tracklet(p, c, frames) for (p, c, _), frames in groups.items()]


def split_identities(tracklets: Sequence[Tracklet], test_fraction: float = 0.5, seed: int = 0) -> tuple[list[Tracklet], list[Tracklet]]:
    """Split tracklets by person (disjoint identities), repeatably by ``seed``."""
    people = sorted({t.person for t in tracklets})
    if len(people) < 2:
        raise DataError(f"need at least two identities to split into train and test, got {len(people)}; add people")
    rng = random.Random(seed)
    rng.shuffle(people)
    n_test = min(len(people) - 1, max(1, round(test_fraction * len(people))))
    test_people = set(people[:n_test])
    return [t for t in tracklets if t.person not in test_people], [t for t in tracklets if t.person in test_people]


def restricted_random_indices(n_frames: int, seq_len: int, rng: np.random.Generator) -> list[int]:
    """One random frame from each of ``seq_len`` equal chunks of ``range(n_frames)``; a tracklet
    shorter than ``seq_len`` repeats frames (every frame used, in order)."""
    if n_frames <= 0:
        raise DataError("a tracklet has no frames; remove it from the data")
    if n_frames < seq_len:
        return sorted(np.resize(np.arange(n_frames), seq_len).tolist())
    bounds = np.linspace(0, n_frames, seq_len + 1)
    return [int(rng.integers(int(bounds[i]), max(int(bounds[i]) + 1, int(bounds[i + 1])))) for i in range(seq_len)]


def load_frame(frame: Any) -> Image.Image:
    """A frame as an RGB PIL image: from a path (error names the file) or an array/PIL image."""
    if isinstance(frame, Image.Image):
        return frame.convert("RGB")
    if isinstance(frame, np.ndarray):
        return Image.fromarray(frame).convert("RGB")
    try:
        with Image.open(frame) as img:
            return img.convert("RGB")
    except FileNotFoundError as exc:
        raise DataError(f"frame not found: {frame}; check the data root (or the manifest's paths)") from exc
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"cannot read frame {frame} ({exc}); the image is corrupt or not an image") from exc


# --------------------------------------------------------------------------------------------
# frame pipeline


@dataclass(frozen=True)
class FrameNormalize:
    """The model's half of the frame pipeline: PIL frame -> float tensor ``(C, H, W)`` normalised
    with the backbone's ``mean`` / ``std`` (C = ``len(mean)``: 1 grey, 3 RGB). ``train`` marks
    the model's training transform (True) or its evaluation transform (False)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    train: bool = False

    def __call__(self, image: Image.Image) -> Tensor:
        mode = "L" if len(self.mean) == 1 else "RGB"
        tensor = TF.to_tensor(image if image.mode == mode else image.convert(mode))
        return TF.normalize(tensor, list(self.mean), list(self.std))


def is_evaluation_transform(transform: Any) -> bool:
    """Whether ``transform`` is marked as an evaluation transform (``transform.train is False``).
    Unmarked transforms (and None) count as training transforms."""
    return getattr(transform, "train", True) is False


def frame_pipeline(
    height: int, width: int, train: bool, hflip: float = 0.5, pad: int = 10,
    transform: Callable[[Image.Image], Tensor] | None = None,
) -> Callable[[Image.Image], Tensor]:
    """PIL frame -> tensor: resize to ``height x width``; when ``train`` a horizontal flip with
    probability ``hflip`` and a random ``height x width`` crop after zero-padding by ``pad``
    pixels (the usual re-ID augmentation); then ``transform`` (the model's
    :class:`FrameNormalize`), or a plain conversion to a [0, 1] tensor without one."""
    if height < 8 or width < 8:
        raise ConfigError(f"data.params height and width must be >= 8 pixels, got {height} x {width}")
    if not 0.0 <= hflip <= 1.0:
        raise ConfigError(f"data.params.hflip is a probability in [0, 1], got {hflip}")
    if pad < 0:
        raise ConfigError(f"data.params.pad must be >= 0 pixels, got {pad}")
    steps: list[Any] = [T.Resize((height, width))]
    if train and hflip > 0:
        steps.append(T.RandomHorizontalFlip(hflip))
    if train and pad > 0:
        steps.append(T.RandomCrop((height, width), padding=pad))
    steps.append(transform if transform is not None else T.ToTensor())
    return T.Compose(steps)


# --------------------------------------------------------------------------------------------
# dataset


def pad_tracklets(batch: Sequence[tuple[Tensor, int]]) -> tuple[tuple[Tensor, Tensor], Tensor]:
    """Collate test-mode items ``(frames (n_i, C, H, W), label)`` into
    ``((clips (B, T_max, C, H, W), mask (B, T_max) bool), labels (B,))``; padded frames are
    zeros and ``mask`` is False on them."""
    longest = max(int(frames.shape[0]) for frames, _ in batch)
    first = batch[0][0]
    clips = first.new_zeros((len(batch), longest, *first.shape[1:]))
    mask = torch.zeros(len(batch), longest, dtype=torch.bool)
    for i, (frames, _) in enumerate(batch):
        clips[i, : frames.shape[0]] = frames
        mask[i, : frames.shape[0]] = True
    return (clips, mask), torch.as_tensor([int(label) for _, label in batch], dtype=torch.long)


class TrackletDataset(Dataset):
    """Items of tracklets: ``(clip (T, C, H, W), label)`` in ``mode="train"`` and
    ``(frames (n_frames, C, H, W), label)`` in ``mode="test"`` (see the module docstring).

    Attributes: ``labels`` (person ids mapped to 0..P-1 in sorted order), ``persons`` (the
    original ids: -1 junk and 0 distractors kept), ``cameras``, ``class_names`` (the person id of
    each label), ``paths`` (each tracklet's first frame, when frames are files), ``is_query``
    (when given: True for query items, False for gallery items) and ``collate_fn``
    (:func:`pad_tracklets` in test mode, None in train mode).
    """

    def __init__(
        self,
        tracklets: Sequence[Tracklet],
        transform: Callable[[Image.Image], Tensor],
        seq_len: int = 4,
        mode: str = "train",
        is_query: Sequence[bool] | None = None,
    ) -> None:
        if not tracklets:
            raise DataError("the tracklet split is empty; check the data root and the split parameters")
        if mode not in ("train", "test"):
            raise DataError(f"mode must be 'train' or 'test', got '{mode}'")
        if seq_len < 1:
            raise ConfigError(f"data.params.seq_len (frames per clip) must be >= 1, got {seq_len}")
        empty = [t for t in tracklets if not t.frames]
        if empty:
            raise DataError(f"{len(empty)} tracklet(s) have no frames (e.g. person {empty[0].person}, camera "
                            f"{empty[0].camera}); remove them from the data")
        self.tracklets, self.transform, self.seq_len, self.mode = list(tracklets), transform, seq_len, mode
        self.persons = [t.person for t in self.tracklets]
        people = sorted(set(self.persons))
        index = {p: i for i, p in enumerate(people)}
        self.labels = [index[p] for p in self.persons]
        self.class_names = [str(p) for p in people]
        self.cameras = [t.camera for t in self.tracklets]
        files = all(isinstance(t.frames[0], (str, Path)) for t in self.tracklets)
        self.paths = [str(t.frames[0]) for t in self.tracklets] if files else None
        if is_query is not None:
            if len(is_query) != len(self.tracklets):
                raise DataError(f"is_query has {len(is_query)} entries for {len(self.tracklets)} tracklets")
            self.is_query = [bool(q) for q in is_query]
        self.collate_fn = pad_tracklets if mode == "test" else None

    def __len__(self) -> int:
        return len(self.tracklets)

    def _frames(self, frames: list[Any], indices: Sequence[int]) -> Tensor:
        return torch.stack([self.transform(load_frame(frames[i])) for i in indices])

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        frames = self.tracklets[index].frames
        if self.mode == "train":
            rng = np.random.default_rng(np.random.randint(0, 2**31 - 1))  # seeded per item by the trainer
            return self._frames(frames, restricted_random_indices(len(frames), self.seq_len, rng)), self.labels[index]
        return self._frames(frames, range(len(frames))), self.labels[index]
