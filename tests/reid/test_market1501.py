"""Market-1501 layout parsed from a tiny fake tree."""

import numpy as np
import pytest
from PIL import Image

from deepmetric.data.market1501 import market1501_tracklets, parse_market_name
from deepmetric.errors import DataError


def jpg(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((8, 4, 3), dtype=np.uint8)).save(path)


@pytest.mark.parametrize(
    "name, expected",
    [("0002_c1s1_000451_03.jpg", (2, 1)), ("-1_c3s2_012345_01.jpg", (-1, 3)),
     ("0000_c6s4_002202_00.jpg", (0, 6)), ("1501_c2s3_070952_01.jpg", (1501, 2)),
     ("0005_c2_f0046985.jpg", (5, 2))],  # DukeMTMC-reID naming
)
def test_names(name, expected):
    assert parse_market_name(name) == expected


def test_bad_name_says_what_a_name_looks_like():
    with pytest.raises(DataError, match="0002_c1s1_000451_03"):
        parse_market_name("person2_cam1.jpg")


def test_fake_tree(tmp_path):
    for name in ["0002_c1s1_000451_03.jpg", "0002_c2s1_000301_01.jpg", "0007_c3s1_000001_01.jpg",
                 "-1_c1s1_000002_01.jpg"]:
        jpg(tmp_path / "bounding_box_train" / name)
    for name in ["0003_c2s1_000100_01.jpg", "0000_c1s1_000200_02.jpg", "-1_c4s2_000300_01.jpg"]:
        jpg(tmp_path / "bounding_box_test" / name)
    jpg(tmp_path / "query" / "0003_c1s1_000050_00.jpg")
    (tmp_path / "query" / "Thumbs.db").write_text("not an image")

    train = market1501_tracklets(tmp_path, "train")
    assert [(t.person, t.camera) for t in train] == [(2, 1), (2, 2), (7, 3)]  # junk dropped for training
    assert all(len(t.frames) == 1 and t.frames[0].is_file() for t in train)
    gallery = market1501_tracklets(tmp_path, "gallery")
    assert sorted((t.person, t.camera) for t in gallery) == [(-1, 4), (0, 1), (3, 2)]  # kept for evaluation
    query = market1501_tracklets(tmp_path, "query")
    assert [(t.person, t.camera, t.frames[0].name) for t in query] == [(3, 1, "0003_c1s1_000050_00.jpg")]
    assert len(market1501_tracklets(tmp_path, "train", drop_junk=False)) == 4

    with pytest.raises(DataError, match="bounding_box_train"):
        market1501_tracklets(tmp_path / "nowhere", "train")
    with pytest.raises(DataError, match="'train', 'query' or 'gallery'"):
        market1501_tracklets(tmp_path, "test")
