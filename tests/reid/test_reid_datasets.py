"""The re-ID loaders of the dataset registry on tiny fake trees: train / test items and modes,
query / gallery assembly, identity splits, and one-line errors for wrong layouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.io import savemat

from deepmetric.config import load_config
from deepmetric.data.registry import DATASETS
from deepmetric.data.tracklets import FrameNormalize, pad_tracklets
from deepmetric.errors import ConfigError, DataError
from deepmetric.training.builders import build_datasets, build_model

EVAL = FrameNormalize((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), train=False)
TRAIN = FrameNormalize((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), train=True)
SMALL = {"height": 16, "width": 8, "seq_len": 2}


def png(path: Path, value: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 4, 3), value % 256, dtype=np.uint8)).save(path)


def prid_tree(root: Path, people: int = 6, frames: int = 3) -> Path:
    for camera, cam in enumerate(("cam_a", "cam_b")):
        for person in range(1, people + 1):
            for f in range(frames + person % 2):  # odd people have one frame more
                png(root / "prid_2011" / "multi_shot" / cam / f"person_{person:04d}" / f"{f:04d}.png", 20 * person + f)
    png(root / "prid_2011" / "multi_shot" / "cam_a" / "person_0099" / "0000.png")  # only seen by camera A
    return root


def mars_tree(root: Path) -> Path:
    train_names = ["0001C1T0001F001.jpg", "0001C1T0001F002.jpg", "0002C3T0001F001.jpg", "0002C3T0001F002.jpg"]
    test_names = ["0003C1T0001F001.jpg", "0003C2T0002F001.jpg", "0003C2T0002F002.jpg", "00-1C4T0001F001.jpg",
                  "0000C5T0001F001.jpg"]
    for n in train_names:
        png(root / "bbox_train" / n[:4] / n)
    for n in test_names:
        png(root / "bbox_test" / n[:4] / n)
    info = root / "info"
    info.mkdir(parents=True)
    (info / "train_name.txt").write_text("\n".join(train_names) + "\n")
    (info / "test_name.txt").write_text("\n".join(test_names) + "\n")
    savemat(info / "tracks_train_info.mat", {"track_train_info": np.array([[1, 2, 1, 1], [3, 4, 2, 3]])})
    savemat(info / "tracks_test_info.mat",
            {"track_test_info": np.array([[1, 1, 3, 1], [2, 3, 3, 2], [4, 4, -1, 4], [5, 5, 0, 5]])})
    savemat(info / "query_IDX.mat", {"query_IDX": np.array([[1]])})
    return root


def test_every_reid_name_is_registered() -> None:
    for name in ("mars", "prid2011", "ilidsvid", "market1501", "tracklet_csv"):
        assert callable(DATASETS.resolve(name)), name


def test_mars_train_and_test_items(tmp_path: Path) -> None:
    root = mars_tree(tmp_path / "MARS")
    load = DATASETS.resolve("mars")
    train = load(root=str(root), split="train", transform=TRAIN, **SMALL)
    assert train.mode == "train" and train.collate_fn is None and train.persons == [1, 2]
    np.random.seed(0)
    clip, label = train[1]
    assert clip.shape == (2, 3, 16, 8) and label == 1
    test = load(root=str(root), split="test", transform=EVAL, **SMALL)
    assert test.is_query == [True, False, False, False]
    assert test.persons == [3, 3, -1, 0] and test.cameras == [1, 2, 4, 5]  # junk and distractor kept
    assert test.collate_fn is pad_tracklets and test[1][0].shape == (2, 3, 16, 8)
    assert test.labels == [2, 2, 0, 1] and test.class_names == ["-1", "0", "3"]
    assert Path(test.paths[1]).name == "0003C2T0002F001.jpg"


def test_train_split_follows_the_transform_mark(tmp_path: Path) -> None:
    """The model's evaluation transform asks for all frames (validation), any other for clips."""
    root = prid_tree(tmp_path / "prid")
    load = DATASETS.resolve("prid2011")
    for transform, mode in ((TRAIN, "train"), (None, "train"), (EVAL, "test")):
        data = load(root=str(root), split="train", transform=transform, **SMALL)
        assert data.mode == mode
        assert not hasattr(data, "is_query")
    evaluated = load(root=str(root), split="train", transform=EVAL, **SMALL)
    assert [evaluated[i][0].shape[0] for i in range(len(evaluated))] == [len(t.frames) for t in evaluated.tracklets]


def test_two_camera_identity_split_and_query_camera(tmp_path: Path) -> None:
    root = prid_tree(tmp_path / "prid")
    load = DATASETS.resolve("prid2011")
    train = load(root=str(root), split="train", seed=3, **SMALL)
    test = load(root=str(root), split="test", seed=3, **SMALL)
    assert 99 not in train.persons + test.persons  # seen by one camera only: left out
    assert not set(train.persons) & set(test.persons) and len(set(test.persons)) == 3
    queries = [i for i, q in enumerate(test.is_query) if q]
    assert queries == list(range(3)) and all(test.cameras[i] == 0 for i in queries)
    assert all(c == 1 for c, q in zip(test.cameras, test.is_query) if not q)
    # the split follows split_seed (default: the run seed)
    again = load(root=str(root), split="test", seed=0, split_seed=3, **SMALL)
    assert again.persons == test.persons
    other = [load(root=str(root), split="test", seed=0, split_seed=s, **SMALL).persons for s in range(6)]
    assert len({tuple(p) for p in other}) > 1
    # min_frames keeps the longer (odd) people only
    odd = load(root=str(root), split="test", min_frames=4, **SMALL)
    assert all(p % 2 == 1 for p in odd.persons)
    swapped = load(root=str(root), split="test", seed=3, query_camera=1, **SMALL)
    assert all(c == 1 for c, q in zip(swapped.cameras, swapped.is_query) if q)
    with pytest.raises(DataError, match=r"query camera 7 has no test tracklets.*\[0, 1\].*query_camera"):
        load(root=str(root), split="test", query_camera=7, **SMALL)
    with pytest.raises(DataError, match="min_frames"):
        load(root=str(root), split="train", min_frames=50, **SMALL)
    with pytest.raises(ConfigError, match="test_fraction"):
        load(root=str(root), split="train", test_fraction=1.5, **SMALL)


def test_ilidsvid_and_csv(tmp_path: Path) -> None:
    for camera, cam in enumerate(("cam1", "cam2")):
        for person in (1, 2, 3, 4):
            for f in range(2):
                png(tmp_path / "ilids" / "i-LIDS-VID" / "sequences" / cam / f"person{person:03d}" / f"{f}.png")
    test = DATASETS.resolve("ilidsvid")(root=str(tmp_path / "ilids"), split="test", **SMALL)
    assert sorted(set(test.persons)) and len(test) == 4 and sum(test.is_query) == 2
    rows = ["path,person,camera,sequence"]
    for person in (5, 6, 7, 8):
        for camera in (0, 1):
            for f in range(2):
                rel = f"p{person}/c{camera}_{f}.png"
                png(tmp_path / "csv" / rel)
                rows.append(f"{rel},{person},{camera},s{camera}")
    (tmp_path / "csv" / "frames.csv").write_text("\n".join(rows) + "\n")
    test = DATASETS.resolve("tracklet_csv")(root=str(tmp_path / "csv" / "frames.csv"), split="test", **SMALL)
    assert len(test) == 4 and test[0][0].shape == (2, 3, 16, 8)


def test_market1501_is_one_frame_clips(tmp_path: Path) -> None:
    root = tmp_path / "market"
    for name in ["0002_c1s1_000451_03.jpg", "0002_c2s1_000301_01.jpg", "0007_c3s1_000001_01.jpg",
                 "0007_c1s1_000002_01.jpg", "-1_c1s1_000002_01.jpg"]:
        png(root / "bounding_box_train" / name)
    for name in ["0003_c2s1_000100_01.jpg", "0000_c1s1_000200_02.jpg", "-1_c4s2_000300_01.jpg"]:
        png(root / "bounding_box_test" / name)
    png(root / "query" / "0003_c1s1_000050_00.jpg")
    load = DATASETS.resolve("market1501")
    train = load(root=str(root), split="train", height=16, width=8)
    assert len(train) == 4 and train[0][0].shape == (1, 3, 16, 8)
    test = load(root=str(root), split="test", height=16, width=8)
    assert test.is_query == [True, False, False, False] and test.persons == [3, -1, 0, 3]
    with pytest.raises(ConfigError, match="seq_len"):
        build_datasets(load_config({"data": {"name": "market1501", "root": str(root), "params": {"seq_len": 4}}}),
                       torch.nn.Identity())


def test_wrong_layouts_are_one_line_errors_naming_the_fitting_loader(tmp_path: Path) -> None:
    prid = prid_tree(tmp_path / "prid")
    mars = mars_tree(tmp_path / "MARS")
    cases = [
        ("mars", prid, r"not a mars root; it looks like data.name=prid2011"),
        ("prid2011", mars, r"not a prid2011 root; it looks like data.name=mars"),
        ("market1501", tmp_path, r"not a market1501 root; data.name=market1501 needs a folder with bounding_box_train/"),
        ("ilidsvid", tmp_path / "nowhere", r"does not exist"),
        ("tracklet_csv", prid, r"not a tracklet_csv root.*prid2011"),
    ]
    for name, root, message in cases:
        with pytest.raises(DataError, match=message) as info:
            DATASETS.resolve(name)(root=str(root), split="train")
        assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="'train' and 'test'"):
        DATASETS.resolve("mars")(root=str(mars), split="query")


def test_build_datasets_gives_clips_for_training_and_all_frames_for_validation(tmp_path: Path) -> None:
    root = prid_tree(tmp_path / "prid", people=10)
    config = load_config({
        "data": {"name": "prid2011", "root": str(root), "params": {**SMALL, "pad": 1}, "val_fraction": 0.4},
        "model": {"name": "tracklet", "backbone": "test_efficientnet", "pretrained": False, "embedding_dim": 4},
        "eval": {"protocol": "reid"},
    })
    model = build_model(config)
    splits = build_datasets(config, model)
    assert splits.train.base.mode == "train" and splits.val.base.mode == "test"
    assert splits.val.collate_fn is pad_tracklets and splits.test.collate_fn is pad_tracklets
    train_people = {splits.train.base.persons[i] for i in splits.train.indices}
    val_people = {splits.val.base.persons[i] for i in splits.val.indices}
    assert train_people and val_people and not train_people & val_people
    assert not hasattr(splits.val, "is_query") and splits.val.cameras  # retrieval-only evaluation
    np.random.seed(0)
    clip, _ = splits.train[0]
    assert clip.shape == (2, 3, 16, 8)
    frames, _ = splits.val[0]
    assert frames.shape[0] == len(splits.val.base.tracklets[splits.val.indices[0]].frames)
