"""Tracklet layouts (MARS, PRID2011, iLIDS-VID, CSV) parsed from tiny fake trees, frame sampling,
the two dataset modes and the padding collate."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.io import savemat

from deepmetric.data.tracklets import (
    FrameNormalize,
    Tracklet,
    TrackletDataset,
    csv_tracklets,
    frame_pipeline,
    ilidsvid_tracklets,
    mars_tracklets,
    pad_tracklets,
    prid2011_tracklets,
    restricted_random_indices,
    split_identities,
)
from deepmetric.errors import ConfigError, DataError


def png(path: Path, value: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 4, 3), value, dtype=np.uint8)).save(path)


def test_mars_layout(tmp_path: Path) -> None:
    train_names = ["0001C1T0001F001.jpg", "0001C1T0001F002.jpg", "0002C3T0001F001.jpg"]
    test_names = ["0003C1T0001F001.jpg", "0003C2T0002F001.jpg", "0003C2T0002F002.jpg", "00-1C4T0001F001.jpg"]
    for n in train_names:
        png(tmp_path / "bbox_train" / n[:4] / n)
    for n in test_names:
        png(tmp_path / "bbox_test" / n[:4] / n)
    info = tmp_path / "info"
    info.mkdir()
    (info / "train_name.txt").write_text("\n".join(train_names) + "\n")
    (info / "test_name.txt").write_text("\n".join(test_names) + "\n")
    savemat(info / "tracks_train_info.mat", {"track_train_info": np.array([[1, 2, 1, 1], [3, 3, 2, 3]])})
    savemat(info / "tracks_test_info.mat", {"track_test_info": np.array([[1, 1, 3, 1], [2, 3, 3, 2], [4, 4, -1, 4]])})
    savemat(info / "query_IDX.mat", {"query_IDX": np.array([[1]])})
    train = mars_tracklets(tmp_path, "train")
    assert [(t.person, t.camera, len(t.frames)) for t in train] == [(1, 1, 2), (2, 3, 1)]
    assert train[0].frames[1] == tmp_path / "bbox_train" / "0001" / "0001C1T0001F002.jpg"
    query, gallery = mars_tracklets(tmp_path, "query"), mars_tracklets(tmp_path, "gallery")
    assert [(t.person, t.camera) for t in query] == [(3, 1)]
    assert [(t.person, t.camera, len(t.frames)) for t in gallery] == [(3, 2, 2), (-1, 4, 1)]
    assert gallery[1].frames[0].parent.name == "00-1"
    with pytest.raises(DataError, match="info"):
        mars_tracklets(tmp_path / "bbox_train", "train")


def test_prid_ilids_and_csv_layouts(tmp_path: Path) -> None:
    for cam, person, n in [("cam_a", 1, 3), ("cam_b", 1, 2), ("cam_a", 2, 1)]:
        for f in range(n):
            png(tmp_path / "prid_2011" / "multi_shot" / cam / f"person_{person:04d}" / f"{f:04d}.png")
    tracks = prid2011_tracklets(tmp_path)
    assert sorted((t.person, t.camera, len(t.frames)) for t in tracks) == [(1, 0, 3), (1, 1, 2), (2, 0, 1)]
    assert len(prid2011_tracklets(tmp_path, min_frames=2)) == 2
    for cam in ["cam1", "cam2"]:
        png(tmp_path / "i-LIDS-VID" / "sequences" / cam / "person007" / "a.png")
    assert sorted((t.person, t.camera) for t in ilidsvid_tracklets(tmp_path)) == [(7, 0), (7, 1)]
    (tmp_path / "m.csv").write_text("path,person,camera,sequence\na.png,5,0,s1\nb.png,5,0,s1\nc.png,5,1,s2\n")
    tracks = csv_tracklets(tmp_path / "m.csv")
    assert sorted((t.person, t.camera, len(t.frames)) for t in tracks) == [(5, 0, 2), (5, 1, 1)]
    (tmp_path / "bad.csv").write_text("path,person\na.png,1\n")
    with pytest.raises(DataError, match="camera"):
        csv_tracklets(tmp_path / "bad.csv")


def test_restricted_random_sampling() -> None:
    rng = np.random.default_rng(0)
    for n, t in [(20, 4), (9, 4), (4, 4), (2, 4)]:
        idx = restricted_random_indices(n, t, rng)
        assert len(idx) == t and idx == sorted(idx) and all(0 <= i < n for i in idx)
        if n >= t:
            bounds = np.floor(np.linspace(0, n, t + 1))
            assert all(bounds[c] <= i < max(bounds[c] + 1, bounds[c + 1]) for c, i in enumerate(idx))
        else:
            assert set(idx) == set(range(n))


def test_split_identities_disjoint_repeatable() -> None:
    tracks = [Tracklet(p, c, [0]) for p in range(10) for c in range(2)]
    a_train, a_test = split_identities(tracks, 0.5, seed=3)
    b_train, b_test = split_identities(tracks, 0.5, seed=3)
    assert [t.person for t in a_test] == [t.person for t in b_test]
    assert not {t.person for t in a_train} & {t.person for t in a_test}
    assert len({t.person for t in a_test}) == 5


def to_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img, dtype=np.float32)).permute(2, 0, 1)


def test_tracklet_dataset_modes() -> None:
    frames = [np.full((6, 6), v, dtype=np.uint8) for v in range(10)]
    tracks = [Tracklet(40, 0, frames), Tracklet(12, 1, frames[:3])]
    train = TrackletDataset(tracks, to_tensor, seq_len=4, mode="train")
    np.random.seed(0)
    clip, label = train[0]
    assert clip.shape == (4, 3, 6, 6) and label == 1 and train.labels == [1, 0]
    assert train.persons == [40, 12] and train.cameras == [0, 1] and train.class_names == ["12", "40"]
    assert train.collate_fn is None and train.paths is None and not hasattr(train, "is_query")
    drawn = clip[:, 0, 0, 0].tolist()  # one frame from each of the chunks [0,2) [2,5) [5,7) [7,10)
    assert all(lo <= v < hi for v, (lo, hi) in zip(drawn, [(0, 2), (2, 5), (5, 7), (7, 10)]))
    np.random.seed(0)
    assert torch.equal(train[0][0], clip)  # the draw follows the (trainer-seeded) global RNG
    test = TrackletDataset(tracks, to_tensor, seq_len=4, mode="test", is_query=[True, False])
    every, _ = test[0]
    assert every.shape == (10, 3, 6, 6) and every[:, 0, 0, 0].tolist() == list(range(10))
    assert test[1][0].shape == (3, 3, 6, 6) and test.is_query == [True, False]
    with pytest.raises(DataError, match="no frames"):
        TrackletDataset([Tracklet(1, 0, [])], to_tensor)
    with pytest.raises(ConfigError, match="seq_len"):
        TrackletDataset(tracks, to_tensor, seq_len=0)


def test_pad_tracklets_pads_and_masks() -> None:
    items = [(torch.full((n, 3, 2, 2), float(n)), label) for n, label in [(2, 5), (4, 1), (1, 0)]]
    (clips, mask), labels = pad_tracklets(items)
    assert clips.shape == (3, 4, 3, 2, 2) and mask.dtype == torch.bool and labels.tolist() == [5, 1, 0]
    for i, (frames, _) in enumerate(items):  # explicit: real frames first, zeros and False after
        n = frames.shape[0]
        assert mask[i].tolist() == [True] * n + [False] * (4 - n)
        assert torch.equal(clips[i, :n], frames) and not clips[i, n:].any()
    # training clips have a fixed T: the default collate stacks them
    from torch.utils.data import default_collate

    batch = default_collate([(torch.zeros(3, 3, 4, 2), 1), (torch.ones(3, 3, 4, 2), 0)])
    assert batch[0].shape == (2, 3, 3, 4, 2)


def test_frame_pipeline_geometry_augmentation_and_normalisation() -> None:
    from PIL import Image

    img = Image.fromarray(np.arange(20 * 10 * 3, dtype=np.uint8).reshape(20, 10, 3) % 255)
    norm = FrameNormalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25), train=False)
    evaluate = frame_pipeline(16, 8, train=False, hflip=1.0, pad=3, transform=norm)
    out = evaluate(img)
    resized = np.asarray(img.resize((8, 16), Image.BILINEAR), dtype=np.float32) / 255.0
    expected = (torch.from_numpy(resized).permute(2, 0, 1) - 0.5) / 0.25
    torch.testing.assert_close(out, expected, atol=0.02, rtol=0)  # no flip, no crop in evaluation
    flipped = frame_pipeline(16, 8, train=True, hflip=1.0, pad=0, transform=norm)(img)
    torch.testing.assert_close(flipped, expected.flip(-1), atol=0.02, rtol=0)
    assert frame_pipeline(16, 8, train=True, hflip=0.0, pad=2)(img).shape == (3, 16, 8)
    assert FrameNormalize((0.5,), (0.5,))(img).shape == (1, 20, 10)  # grey backbones get 1 channel
    with pytest.raises(ConfigError, match="hflip"):
        frame_pipeline(16, 8, True, hflip=2.0)
    with pytest.raises(ConfigError, match="height and width"):
        frame_pipeline(4, 8, True)
