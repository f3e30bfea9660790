"""fit with data.cache: results unchanged (a full-resolution cache trains the same weights as no
cache) and resume stays exact (N steps + N resumed steps == 2N steps) with the memory and disk caches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor, nn

from deepmetric.config import Config, load_config
from deepmetric.data.transforms import build_eval_transform, build_train_transform
from deepmetric.training import builders, fit, load_checkpoint

SIZE = 16
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


class TinyConvNet(nn.Module):
    """Two convolutions on 16 px images; the embedder's transforms (random resized crop, flip)."""

    def __init__(self, embedding_dim: int = 8) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 6, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(6, embedding_dim)
        self.embedding_dim = embedding_dim

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.normalize(self.head(self.backbone(x)), dim=1)

    def backbone_parameters(self) -> Any:
        return self.backbone.parameters()

    def head_parameters(self) -> Any:
        return self.head.parameters()

    def train_transform(self) -> Any:
        return build_train_transform((3, SIZE, SIZE), MEAN, STD)

    def eval_transform(self) -> Any:
        return build_eval_transform((3, SIZE, SIZE), MEAN, STD)


@pytest.fixture
def images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setitem(builders.MODEL_REGISTRY, "tiny_conv", TinyConvNet)
    rng = np.random.default_rng(3)
    root = tmp_path / "images"
    for c in range(6):
        base = rng.integers(0, 200, 3)
        for i in range(5):
            h, w = (30 + 4 * i, 40 - 3 * c)
            pixels = np.clip(base + rng.normal(0, 30, (h, w, 3)), 0, 255).astype(np.uint8)
            (root / f"c{c}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(root / f"c{c}" / f"{i}.png")
    return root


def config(root: Path, *overrides: str) -> Config:
    return load_config({
        "seed": 5,
        "device": "cpu",
        "data": {"name": "folder", "root": str(root), "params": {"test_fraction": 0.34}, "val_fraction": 0.0,
                 "num_workers": 0},
        "sampler": {"p": 2, "k": 2},
        "model": {"name": "tiny_conv"},
        "loss": {"name": "contrastive"},
        "optimizer": {"name": "sgd", "lr": 0.05},
        "scheduler": {"name": "none", "warmup_steps": 0},  # constant rate: 6 steps extended to 12 == 12
        "trainer": {"steps": 12, "eval_every": 0, "checkpoint_every": 4, "log_every": 2},
        "eval": {"split": "test", "baseline": False, "select_metric": "recall@1", "k_values": [1]},
    }, list(overrides))


def weights(run: Path) -> dict[str, Tensor]:
    return load_checkpoint(run / "checkpoints" / "last.pt")["model"]


def same(a: dict[str, Tensor], b: dict[str, Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_full_resolution_cache_trains_the_same_weights(images: Path, tmp_path: Path) -> None:
    plain = fit(config(images), tmp_path / "plain", progress=False, report=False)
    cached = fit(config(images, "data.cache=memory", "data.cache_size=0"), tmp_path / "cached",
                 progress=False, report=False)
    assert same(weights(tmp_path / "plain"), weights(tmp_path / "cached"))
    assert plain["test"] == cached["test"]


@pytest.mark.parametrize("kind", ["memory", "disk"])
def test_resume_with_the_cache_is_exact(images: Path, tmp_path: Path, kind: str) -> None:
    cache = [f"data.cache={kind}", f"data.cache_dir={tmp_path / 'cache'}"]  # default size: 18 px, crops scaled
    fit(config(images, *cache), tmp_path / "straight", progress=False, report=False)
    fit(config(images, *cache, "trainer.steps=6"), tmp_path / "resumed", progress=False, report=False)
    fit(config(images, *cache), tmp_path / "resumed", resume=True, progress=False, report=False)
    assert same(weights(tmp_path / "straight"), weights(tmp_path / "resumed"))
    if kind == "disk":
        assert len(list((tmp_path / "cache").glob("*.u8"))) == 1  # one cache file served all three runs
    # the default-size cache trains on slightly different pixels than no cache: not the same weights
    fit(config(images), tmp_path / "uncached", progress=False, report=False)
    assert not same(weights(tmp_path / "straight"), weights(tmp_path / "uncached"))
