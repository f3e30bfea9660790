"""Video re-identification data: tracklets (one person, one camera, a sequence of frames).

Parsers for the released layouts of MARS (Zheng et al., ECCV 2016), PRID2011 (Hirzer et al.,
SCIA 2011) and iLIDS-VID (Wang et al., ECCV 2014), a CSV manifest (one row per frame, columns
``path,person,camera,sequence``), and a dataset that samples T frames per tracklet:

* training: restricted random sampling (Li et al., CVPR 2018, "Diversity Regularized
  Spatiotemporal Attention"): the tracklet is cut into T equal chunks and one frame is drawn at
  random from each, so a clip spans the whole sequence;
* testing: every frame, in consecutive chunks of T (the last chunk padded by repetition) so the
  caller can embed all frames and pool them.
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

from deepmetric.errors import DataError


@dataclass
class Tracklet:
    """Frames of one person seen by one camera; frames are file paths or in-memory images."""

    person: int
    camera: int
    frames: list[Any] = field(default_factory=list)


def _check_root(root: Path) -> Path:
    if not root.exists():
        raise DataError(f"dataset folder not found: {root}; check the data root")
    return root


def _loadmat(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(f"MARS info file missing: {path}; the 'info' folder of the MARS release is required")
    from scipy.io import loadmat

    return loadmat(str(path))


def _read_names(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"MARS name list missing: {path}")
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
        raise DataError(f"MARS split '{split}' under {root} is empty")
    return out


def _two_camera_layout(base: Path, cams: Sequence[str], prefix: str, pattern: str, min_frames: int) -> list[Tracklet]:
    out = []
    for camera, cam in enumerate(cams):
        cam_dir = base / cam
        if not cam_dir.is_dir():
            raise DataError(f"camera folder missing: {cam_dir}; check the dataset root")
        for person_dir in sorted(p for p in cam_dir.iterdir() if p.is_dir() and p.name.startswith(prefix)):
            frames = sorted(person_dir.glob(pattern))
            if len(frames) >= min_frames:
                out.append(Tracklet(int(person_dir.name[len(prefix):]), camera, frames))
    if not out:
        raise DataError(f"no tracklets found under {base}")
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
        raise DataError(f"manifest not found: {manifest}")
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
        raise DataError(f"manifest {manifest} lists no frames")
    return [Tracklet(p, c, frames) for (p, c, _), frames in groups.items()]


def split_identities(tracklets: Sequence[Tracklet], test_fraction: float = 0.5, seed: int = 0) -> tuple[list[Tracklet], list[Tracklet]]:
    """Split tracklets by person (disjoint identities), repeatably by ``seed``."""
    people = sorted({t.person for t in tracklets})
    if len(people) < 2:
        raise DataError("need at least two identities to split into train and test")
    rng = random.Random(seed)
    rng.shuffle(people)
    n_test = min(len(people) - 1, max(1, round(test_fraction * len(people))))
    test_people = set(people[:n_test])
    return [t for t in tracklets if t.person not in test_people], [t for t in tracklets if t.person in test_people]


def restricted_random_indices(n_frames: int, seq_len: int, rng: np.random.Generator) -> list[int]:
    """One random frame from each of ``seq_len`` equal chunks of ``range(n_frames)``; a tracklet
    shorter than ``seq_len`` repeats frames (every frame used, in order)."""
    if n_frames <= 0:
        raise DataError("a tracklet has no frames")
    if n_frames < seq_len:
        return sorted(np.resize(np.arange(n_frames), seq_len).tolist())
    bounds = np.linspace(0, n_frames, seq_len + 1)
    return [int(rng.integers(int(bounds[i]), max(int(bounds[i]) + 1, int(bounds[i + 1])))) for i in range(seq_len)]


def all_frame_chunks(n_frames: int, seq_len: int) -> list[list[int]]:
    """Consecutive chunks of ``seq_len`` frame indices covering every frame; the last chunk is
    padded by repeating its final frame."""
    chunks = [list(range(s, min(s + seq_len, n_frames))) for s in range(0, n_frames, seq_len)]
    chunks[-1] += [chunks[-1][-1]] * (seq_len - len(chunks[-1]))
    return chunks


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
        raise DataError(f"frame not found: {frame}") from exc
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"cannot read frame {frame} ({exc}); the image is corrupt or not an image") from exc


class TrackletDataset(Dataset):
    """Clips of ``seq_len`` frames per tracklet: ``(clip (T, C, H, W), person)``.

    ``mode="train"`` draws a restricted random sample at each access (seeded); ``mode="test"``
    returns every frame as ``(chunks (n_chunks, T, C, H, W), person)``. ``labels`` are person
    identities remapped to 0..P-1 (``persons`` keeps the original ids), ``cameras`` the cameras.
    """

    def __init__(
        self,
        tracklets: Sequence[Tracklet],
        transform: Callable[[Image.Image], Tensor],
        seq_len: int = 4,
        mode: str = "train",
        seed: int = 0,
    ) -> None:
        if not tracklets:
            raise DataError("the tracklet split is empty")
        if mode not in ("train", "test"):
            raise DataError(f"mode must be 'train' or 'test', got '{mode}'")
        self.tracklets, self.transform, self.seq_len, self.mode = list(tracklets), transform, seq_len, mode
        self.persons = [t.person for t in self.tracklets]
        index = {p: i for i, p in enumerate(sorted(set(self.persons)))}
        self.labels = [index[p] for p in self.persons]
        self.cameras = [t.camera for t in self.tracklets]
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.tracklets)

    def _clip(self, frames: list[Any], indices: list[int]) -> Tensor:
        return torch.stack([self.transform(load_frame(frames[i])) for i in indices])

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        frames = self.tracklets[index].frames
        if self.mode == "train":
            return self._clip(frames, restricted_random_indices(len(frames), self.seq_len, self.rng)), self.labels[index]
        chunks = all_frame_chunks(len(frames), self.seq_len)
        return torch.stack([self._clip(frames, c) for c in chunks]), self.labels[index]
