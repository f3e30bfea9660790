"""Omniglot (read from its zip) and Olivetti (.npz) datasets with their zero-shot splits."""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deepmetric.data.olivetti import OlivettiDataset, olivetti_dataset
from deepmetric.data.omniglot import OmniglotDataset, embedded_omniglot_zip, omniglot_dataset
from deepmetric.errors import DataError

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def png_bytes(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((5, 5), value, dtype=np.uint8)).convert("1").save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def omniglot_zip(tmp_path):
    path = tmp_path / "tiny_omniglot.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("top/", "")
        for alphabet in ("Alpha", "Beta"):
            for c in range(1, 5):
                for d in range(1, 3):
                    value = 255 if (c + d) % 2 else 0
                    archive.writestr(f"top/{alphabet}/character{c:02d}/{c:04d}_{d:02d}.png", png_bytes(value))
    return path


def test_omniglot_reads_the_zip_characters_are_classes(omniglot_zip):
    ds = OmniglotDataset(omniglot_zip)
    assert len(ds) == 16 and ds.num_classes == 8
    assert ds.class_names[0] == "Alpha/character01" and ds.alphabets[-1] == "Beta"
    for i in range(len(ds)):
        x, y = ds[i]
        member = ds.paths[i].split("/")
        assert f"{member[-3]}/{member[-2]}" == ds.class_names[y]
        assert x.shape == (3, 5, 5)
        c, d = int(member[-2][-2:]), int(member[-1][5:7])
        assert float(x.mean()) == (1.0 if (c + d) % 2 else 0.0)
    # a pickled copy (what DataLoader workers get) reads on its own
    clone = pickle.loads(pickle.dumps(ds))
    assert torch.equal(clone[3][0], ds[3][0])


def test_omniglot_zero_shot_splits(omniglot_zip):
    train = omniglot_dataset(omniglot_zip, split="train", seed=1)
    test = omniglot_dataset(omniglot_zip, split="test", seed=1)
    assert set(train.class_names).isdisjoint(test.class_names)
    assert train.num_classes + test.num_classes == 8
    # by characters: every alphabet on both sides (2 of its 4 characters each)
    assert sorted(test.alphabets) == ["Alpha", "Alpha", "Beta", "Beta"]
    assert omniglot_dataset(omniglot_zip, split="test", seed=1).class_names == test.class_names
    by_alphabet = omniglot_dataset(omniglot_zip, split="test", split_by="alphabets", seed=1)
    assert len(set(by_alphabet.alphabets)) == 1 and by_alphabet.num_classes == 4


def test_omniglot_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        OmniglotDataset(tmp_path / "missing.zip")
    (tmp_path / "bad.zip").write_bytes(b"no zip")
    with pytest.raises(DataError, match="not a valid zip"):
        OmniglotDataset(tmp_path / "bad.zip")


def test_embedded_omniglot_is_the_small1_background_set():
    path = embedded_omniglot_zip()
    ds = OmniglotDataset(path)
    assert len(ds) == 2720 and ds.num_classes == 136 and len(set(ds.alphabets)) == 5
    train, test = omniglot_dataset(split="train"), omniglot_dataset(split="test")
    assert len(train) + len(test) == 2720 and set(train.class_names).isdisjoint(test.class_names)


def write_faces(path: Path, people: int = 6, photos: int = 3) -> Path:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(people * photos, 8, 8), dtype=np.uint8)
    np.savez(path, images=images, labels=np.repeat(np.arange(people), photos))
    return path


def test_olivetti_grey_to_rgb_and_people_split(tmp_path):
    npz = write_faces(tmp_path / "faces.npz")
    ds = OlivettiDataset(npz)
    x, y = ds[4]
    raw = np.load(npz)["images"][4]
    assert x.shape == (3, 8, 8) and y == 1 and ds.class_names[1] == "person_01"
    assert torch.allclose(x[0] * 255, torch.tensor(raw, dtype=torch.float32), atol=1e-3)
    assert torch.equal(x[0], x[2])
    train = olivetti_dataset(npz, split="train", seed=5)
    test = olivetti_dataset(npz, split="test", seed=5)
    assert len(train.class_names) == 3 and len(test.class_names) == 3
    assert set(train.people).isdisjoint(test.people) and len(train) + len(test) == 18
    assert olivetti_dataset(npz, split="test", seed=5).people == test.people


def test_olivetti_bad_files(tmp_path):
    np.savez(tmp_path / "wrong.npz", pictures=np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(DataError, match="'images' and 'labels'"):
        OlivettiDataset(tmp_path / "wrong.npz")
    np.savez(tmp_path / "float.npz", images=np.zeros((2, 4, 4)), labels=np.zeros(2))
    with pytest.raises(DataError, match="uint8"):
        OlivettiDataset(tmp_path / "float.npz")


@pytest.mark.shared_data
@pytest.mark.skipif(not (SHARED / "olivetti" / "olivetti.npz").is_file(), reason="../shared/data/olivetti absent")
def test_real_olivetti_is_20_plus_20_people():
    path = SHARED / "olivetti" / "olivetti.npz"
    train, test = olivetti_dataset(path, split="train"), olivetti_dataset(path, split="test")
    assert train.num_classes == 20 and test.num_classes == 20 and len(train) == len(test) == 200
    assert train[0][0].shape == (3, 64, 64)
