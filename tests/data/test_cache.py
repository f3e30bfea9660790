"""The decoded-image cache (deepmetric.data.cache, data.cache): same batches as without it, pixels
that are a plain resize of the decoded image, the same random crop boxes, disk reuse and rebuild."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as F
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import transforms as T

from deepmetric.config import load_config
from deepmetric.data.cache import attach_cache, cache_of, default_cache_size, exact_for
from deepmetric.data.folder import ImageFolderDataset
from deepmetric.data.image_io import load_image
from deepmetric.data.transforms import build_eval_transform, build_train_transform
from deepmetric.errors import ConfigError
from deepmetric.training import builders
from deepmetric.training.seed import derive_seed
from deepmetric.training.views import SeededItems

SIZE = 16  # training resolution of these tests
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
BICUBIC = T.InterpolationMode.BICUBIC


def train_transform() -> T.Compose:
    return build_train_transform((3, SIZE, SIZE), MEAN, STD)  # random resized crop, flip, normalise


def eval_transform() -> T.Compose:
    return build_eval_transform((3, SIZE, SIZE), MEAN, STD)  # Resize(round(16 / 0.875) = 18), center crop


def write_tree(root: Path, classes: int = 4, per_class: int = 4) -> Path:
    """Noise images of assorted sizes (some below the default cache size), JPEG and PNG, one grey."""
    rng = np.random.default_rng(7)
    for c in range(classes):
        for i in range(per_class):
            h, w = [(40, 30), (25, 52), (17, 21), (64, 48)][(c + i) % 4]
            path = root / f"class{c}" / f"{i}.{'jpg' if i % 2 else 'png'}"
            path.parent.mkdir(parents=True, exist_ok=True)
            if c == 1 and i == 0:
                Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8), "L").save(path)
            else:
                Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return root


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return write_tree(tmp_path / "images")


def keyed_batches(n: int, seed: int = 0, batch: int = 4) -> list[list[tuple[int, int]]]:
    """fit's batches: (index, item seed) pairs, item seeds from (seed, epoch, batch, position)."""
    order = np.random.default_rng(seed).permutation(n).tolist()
    return [[(i, derive_seed(seed, "item", 0, b, j)) for j, i in enumerate(order[s:s + batch])]
            for b, s in enumerate(range(0, n - batch + 1, batch))]


def batches(dataset: ImageFolderDataset, workers: int = 0) -> list[torch.Tensor]:
    loader = DataLoader(SeededItems(dataset), batch_sampler=keyed_batches(len(dataset)), num_workers=workers)
    return [x for x, _ in loader]


def test_full_resolution_cache_gives_bit_identical_batches(tree: Path) -> None:
    plain = ImageFolderDataset(tree, transform=train_transform())
    cached = ImageFolderDataset(tree, transform=train_transform())
    cache = attach_cache([cached], "memory", 0, "RGB", BICUBIC)
    assert cache_of(cached) is cache and len(cache) == len(plain) == 16
    expected = batches(plain)
    got = batches(cached)
    assert len(got) == 4
    assert all(torch.equal(a, b) for a, b in zip(expected, got))
    # forked loader workers read the same (shared) buffer
    assert all(torch.equal(a, b) for a, b in zip(expected, batches(cached, workers=2)))


def test_default_size_pixels_are_a_resize_and_crop_boxes_are_the_same(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    size = default_cache_size(SIZE)
    assert size == 18
    plain = ImageFolderDataset(tree, transform=train_transform())
    cached = ImageFolderDataset(tree, transform=train_transform())
    cache = attach_cache([cached], "memory", size, "RGB", BICUBIC)
    for i, path in enumerate(cached.paths):
        decoded = load_image(path)
        expected = decoded if min(decoded.size) <= size else F.resize(decoded, size, BICUBIC)
        assert np.array_equal(cache.pixels(i), np.asarray(expected)), path
        assert cache.original_size(i) == decoded.size
    assert any(cache.pixels(i).shape[:2] != load_image(p).size[::-1] for i, p in enumerate(cached.paths))

    drawn: list[tuple[tuple[int, int], tuple[int, int, int, int]]] = []
    original = T.RandomResizedCrop.get_params

    def recording(img, scale, ratio):  # type: ignore[no-untyped-def]
        box = original(img, scale, ratio)
        drawn.append((tuple(F.get_dimensions(img)[1:]), box))
        return box

    monkeypatch.setattr(T.RandomResizedCrop, "get_params", staticmethod(recording))
    x_plain, x_cached = batches(plain), batches(cached)
    half = len(drawn) // 2
    assert half == 16 and drawn[:half] == drawn[half:]  # same (height, width) seen, same boxes drawn
    assert all(a.shape == b.shape == (4, 3, SIZE, SIZE) for a, b in zip(x_plain, x_cached))
    # the same region, from fewer source pixels: close, not equal
    assert 0 < max(float((a - b).abs().mean()) for a, b in zip(x_plain, x_cached)) < 0.5


def test_evaluation_split_reads_the_cache_only_where_pixels_are_identical(tree: Path) -> None:
    assert exact_for(eval_transform(), 18, BICUBIC, "RGB")
    assert not exact_for(eval_transform(), 20, BICUBIC, "RGB")
    assert not exact_for(eval_transform(), 18, T.InterpolationMode.BILINEAR, "RGB")
    assert exact_for(eval_transform(), 0, BICUBIC, "RGB")
    plain = ImageFolderDataset(tree, transform=eval_transform())
    cached = ImageFolderDataset(tree, transform=eval_transform())
    attach_cache([cached], "memory", 18, "RGB", BICUBIC)
    assert all(torch.equal(plain[i][0], cached[i][0]) for i in range(len(plain)))


def _set_mtime(path: Path, seconds: float) -> None:
    os.utime(path, (seconds, seconds))


def test_disk_cache_is_reused_and_rebuilt_when_an_image_changes(tree: Path, tmp_path: Path) -> None:
    folder = tmp_path / "cache"
    first = attach_cache([ImageFolderDataset(tree, transform=train_transform())], "disk", 18, "RGB", BICUBIC, folder)
    assert first.built and first.file is not None and first.file.parent == folder
    index = first.file.with_suffix(".json")
    stamp = (first.file.stat().st_mtime_ns, index.stat().st_mtime_ns)
    assert sorted(p.name for p in folder.iterdir()) == sorted([first.file.name, index.name])  # no temporaries

    second_ds = ImageFolderDataset(tree, transform=train_transform())
    second = attach_cache([second_ds], "disk", 18, "RGB", BICUBIC, folder)
    assert not second.built and second.file == first.file
    assert (first.file.stat().st_mtime_ns, index.stat().st_mtime_ns) == stamp  # not rewritten
    assert all(np.array_equal(first.pixels(i), second.pixels(i)) for i in range(len(first)))
    assert isinstance(second.buffer, np.memmap)

    changed = Path(second_ds.paths[3])
    Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(changed, format="PNG" if changed.suffix == ".png" else "JPEG")
    _set_mtime(changed, changed.stat().st_mtime + 10)
    third = attach_cache([ImageFolderDataset(tree, transform=train_transform())], "disk", 18, "RGB", BICUBIC, folder)
    assert third.built and third.file == first.file
    assert third.pixels(3).shape == (18, 18, 3) and int(third.pixels(3).max()) < 8
    assert np.array_equal(third.pixels(0), first.pixels(0))

    other_size = attach_cache([ImageFolderDataset(tree, transform=train_transform())], "disk", 0, "RGB", BICUBIC, folder)
    assert other_size.built and other_size.file != first.file


def test_disk_cache_of_zip_members_is_keyed_by_the_zip(tmp_path: Path) -> None:
    from deepmetric.data.omniglot import OmniglotDataset, scan_omniglot_zip
    from deepmetric.data.omniglot import embedded_omniglot_zip

    _, keys = scan_omniglot_zip(embedded_omniglot_zip())
    ds = OmniglotDataset(characters=sorted(set(keys))[:2], transform=train_transform())
    cache = attach_cache([ds], "disk", 18, "RGB", BICUBIC, tmp_path / "cache")
    again = attach_cache([OmniglotDataset(characters=sorted(set(keys))[:2], transform=train_transform())],
                         "disk", 18, "RGB", BICUBIC, tmp_path / "cache")
    assert cache.built and not again.built and len(cache) == 40
    assert cache.pixels(0).shape == (18, 18, 3)


class Tensors(torch.utils.data.Dataset):
    """Items held as tensors (like speech features or tracklets): nothing to decode."""

    def __init__(self, transform: object = None) -> None:
        self.labels = [c for c in range(4) for _ in range(4)]
        self.paths = [f"row{i}" for i in range(16)]

    def __len__(self) -> int:
        return 16

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.full((3, 4, 4), float(i)), self.labels[i]


def tensor_dataset(split: str, transform: object = None) -> Tensors:
    return Tensors(transform)


def test_build_datasets_wires_the_cache_and_refuses_non_image_data(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config({
        "data": {"name": "folder", "root": str(tree), "params": {"test_fraction": 0.5}, "cache": "memory",
                 "image_size": SIZE, "val_fraction": 0.0},
        "model": {"pretrained": False},
        "eval": {"split": "test"},
    })
    model = builders.build_model(config)
    splits = builders.build_datasets(config, model, cache=True)
    cache = cache_of(splits.train)
    assert cache is not None and cache.size == 18 and cache.kind == "memory"
    assert cache_of(splits.test) is cache and cache_of(splits.support) is cache  # eval Resize(18): exact
    assert len(cache) == 16  # train and test images once each
    assert cache_of(builders.build_datasets(config, model).train) is None  # only fit asks for the cache

    monkeypatch.setitem(builders.DATASET_REGISTRY, "toy_tensors", tensor_dataset)
    tensors = load_config({"data": {"name": "toy_tensors", "cache": "memory"}, "model": {"pretrained": False}})
    with pytest.raises(ConfigError, match=r"not an image dataset.*set data\.cache=none"):
        builders.build_datasets(tensors, model, cache=True)
