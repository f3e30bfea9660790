"""Image reading, folder-per-class and CSV manifest datasets on tiny trees written by the tests."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deepmetric.data.folder import ImageFolderDataset, folder_dataset
from deepmetric.data.image_io import load_image
from deepmetric.data.manifest import CSVManifestDataset, csv_dataset
from deepmetric.errors import DataError


def write_png(path: Path, value: int, mode: str = "RGB", size: int = 6) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = 3 if mode == "RGB" else 1
    array = np.full((size, size, channels), value, dtype=np.uint8).squeeze()
    Image.fromarray(array).save(path)
    return path


@pytest.fixture
def tree(tmp_path):
    for c, name in enumerate(["zebra", "ant", "bee", "cat"]):
        for i in range(3):
            write_png(tmp_path / "root" / name / f"{i}.png", 10 * c + i, mode="L" if name == "ant" else "RGB")
    (tmp_path / "root" / "ant" / "notes.txt").write_text("not an image")
    return tmp_path / "root"


def test_load_image_converts_grey_to_rgb_and_names_bad_files(tmp_path):
    grey = write_png(tmp_path / "g.png", 77, mode="L")
    image = load_image(grey)
    assert image.mode == "RGB" and np.asarray(image)[0, 0].tolist() == [77, 77, 77]
    with pytest.raises(DataError, match="missing.png.*does not exist"):
        load_image(tmp_path / "missing.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(DataError, match="empty.png.*empty"):
        load_image(tmp_path / "empty.png")
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    with pytest.raises(DataError, match="bad.jpg.*cannot be decoded"):
        load_image(tmp_path / "bad.jpg")


def test_folder_dataset_items_labels_and_names(tree):
    ds = ImageFolderDataset(tree)
    assert ds.class_names == ["ant", "bee", "cat", "zebra"]
    assert len(ds) == 12 and ds.skipped == 0
    for i in range(len(ds)):
        x, y = ds[i]
        assert Path(ds.paths[i]).parent.name == ds.class_names[y]
        assert x.shape == (3, 6, 6) and x.dtype == torch.float32
    # the transform is applied to the RGB PIL image
    ds_t = ImageFolderDataset(tree, transform=lambda im: torch.tensor(np.asarray(im)).float())
    x, y = ds_t[0]
    assert x.shape == (6, 6, 3) and ds_t.class_names[y] == "ant"


def test_folder_dataset_errors_name_the_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        ImageFolderDataset(tmp_path / "nope")
    (tmp_path / "flat").mkdir()
    write_png(tmp_path / "flat" / "a.png", 1)
    with pytest.raises(DataError, match="no class sub-folders"):
        ImageFolderDataset(tmp_path / "flat")


def test_corrupt_file_fails_on_read_or_is_skipped_on_request(tree, capsys):
    (tree / "bee" / "broken.png").write_bytes(b"garbage")
    (tree / "cat" / "empty.jpg").write_bytes(b"")
    strict = ImageFolderDataset(tree)
    bad_index = strict.paths.index(str(tree / "bee" / "broken.png"))
    with pytest.raises(DataError, match="broken.png"):
        strict[bad_index]
    lenient = ImageFolderDataset(tree, skip_bad=True)
    err = capsys.readouterr().err
    assert "warning: skipped 2 unreadable" in err and "UserWarning" not in err
    assert lenient.skipped == 2 and len(lenient) == 12
    for i in range(len(lenient)):
        lenient[i]


def test_folder_splits_class_disjoint_and_given_folders(tree, tmp_path):
    train = folder_dataset(tree, split="train", seed=3)
    test = folder_dataset(tree, split="test", seed=3)
    assert set(train.class_names).isdisjoint(test.class_names)
    assert len(train) + len(test) == 12 and sorted(set(train.labels)) == list(range(train.num_classes))
    assert folder_dataset(tree, split="train", seed=3).paths == train.paths
    items = folder_dataset(tree, split="test", split_by="items", test_fraction=0.34)
    assert items.class_names == ["ant", "bee", "cat", "zebra"] and len(items) == 4

    for split in ("train", "test"):
        for name in ("x", "y"):
            write_png(tmp_path / "given" / split / name / "0.png", 5)
    assert folder_dataset(tmp_path / "given", split="test").paths[0].endswith("test/x/0.png")


def write_manifest(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(4):
        write_png(folder / "img" / f"{i}.png", 40 * i)
    path = folder / "data.csv"
    path.write_text(text)
    return path


def test_csv_manifest_columns_relative_paths_and_string_labels(tmp_path):
    csv_path = write_manifest(
        tmp_path / "m",
        "path,label,split,is_query,is_gallery,camera,sequence\n"
        "img/0.png,dog,train,0,0,1,7\n"
        "img/1.png,cat,train,0,0,2,7\n"
        "img/2.png,dog,test,yes,no,1,8\n"
        "img/3.png,cow,test,false,true,3,9\n",
    )
    ds = CSVManifestDataset(csv_path)
    assert ds.class_names == ["cat", "cow", "dog"] and ds.labels == [2, 0, 2, 1]
    assert ds.is_query == [False, False, True, False] and ds.is_gallery == [False, False, False, True]
    assert ds.cameras == [1, 2, 1, 3] and ds.sequences == [7, 7, 8, 9]
    x, y = ds[1]
    assert y == 0 and torch.allclose(x, torch.full((3, 6, 6), 40 / 255))
    test = csv_dataset(csv_path, split="test")
    assert test.class_names == ["cow", "dog"] and test.labels == [1, 0] and test.is_query == [True, False]
    with pytest.raises(DataError, match="no rows with split 'val'"):
        csv_dataset(csv_path, split="val")


def test_csv_integer_labels_sort_numerically_and_split_without_column(tmp_path):
    csv_path = write_manifest(tmp_path / "m", "path,label\nimg/0.png,10\nimg/1.png,2\nimg/2.png,10\nimg/3.png,2\n")
    ds = csv_dataset(csv_path)
    assert ds.class_names == ["2", "10"] and ds.labels == [1, 0, 1, 0]
    train, test = csv_dataset(csv_path, split="train"), csv_dataset(csv_path, split="test")
    assert len(train) == 2 and len(test) == 2 and set(train.class_names).isdisjoint(test.class_names)


def test_csv_errors_are_clear(tmp_path, capsys):
    with pytest.raises(DataError, match="lacks the column.*label"):
        CSVManifestDataset(write_manifest(tmp_path / "a", "path,class\nimg/0.png,x\n"))
    with pytest.raises(DataError, match="is_query.*maybe"):
        CSVManifestDataset(write_manifest(tmp_path / "b", "path,label,is_query\nimg/0.png,x,maybe\n"))
    with pytest.raises(DataError, match="does not exist"):
        CSVManifestDataset(tmp_path / "none.csv")
    ds = CSVManifestDataset(write_manifest(tmp_path / "c", "path,label\nimg/0.png,x\nimg/9.png,y\n"))
    with pytest.raises(DataError, match="9.png"):
        ds[1]
    capsys.readouterr()
    lenient = CSVManifestDataset(tmp_path / "c" / "data.csv", skip_bad=True)
    assert lenient.skipped == 1 and len(lenient) == 1 and "9.png" in capsys.readouterr().err
