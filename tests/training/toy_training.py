"""Tiny stand-ins for training tests: an in-memory Gaussian-blob dataset with a random
augmentation, a two-layer model with backbone/head parameter groups, and (only while the real
ones are missing) a P x K sampler and an evaluator."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from deepmetric.config import Config, load_config
from deepmetric.training import builders, evaluate

DIM = 12


class AddNoise:
    """Random augmentation: draws from torch's global RNG (so item seeding matters)."""

    def __call__(self, x: Tensor) -> Tensor:
        return x + 0.1 * torch.randn_like(x)


class ToyDataset(Dataset):
    def __init__(self, classes: list[int], per_class: int, transform: Any = None, seed: int = 0) -> None:
        rng = np.random.default_rng(1234)  # the data itself is fixed
        means = rng.normal(size=(64, DIM)).astype(np.float32)
        self.items = []
        self.labels = []
        for c in classes:
            for _ in range(per_class):
                self.items.append(torch.from_numpy(means[c] + 0.3 * rng.normal(size=DIM).astype(np.float32)))
                self.labels.append(c)
        self.paths = [f"item_{i}.npy" for i in range(len(self.items))]
        self.class_names = [f"class{c}" for c in range(64)]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        x = self.items[i]
        return (self.transform(x) if self.transform is not None else x), self.labels[i]


def write_toy_recipe(folder: Path, name: str = "toy", **changes: object) -> Path:
    """``folder/<name>.yaml``: a 4-step recipe of the toy dataset and model named by import path
    (``toy_training`` must be importable, e.g. via ``monkeypatch.syspath_prepend``); each change
    ``section__key=value`` sets one key."""
    import yaml

    recipe: dict[str, dict[str, Any] | Any] = {
        "seed": 3, "device": "cpu",
        "data": {"name": "toy_training:toy_dataset", "num_workers": 0, "val_fraction": 0.25},
        "sampler": {"p": 3, "k": 3},
        "model": {"name": "toy_training:tiny_model", "embedding_dim": 8},
        "loss": {"name": "contrastive"},
        "optimizer": {"name": "sgd", "lr": 0.05},
        "scheduler": {"name": "cosine", "warmup_steps": 2},
        "trainer": {"steps": 4, "eval_every": 4, "checkpoint_every": 4, "log_every": 2},
        "eval": {"select_metric": "map@r", "batch_size": 16, "k_values": [1]},
    }
    for key, value in changes.items():
        section, field = key.split("__")
        recipe[section][field] = value
    path = Path(folder) / f"{name}.yaml"
    path.write_text("# toy\n" + yaml.safe_dump(recipe), encoding="utf-8")
    return path


def toy_dataset(split: str, transform: Any = None, n_classes: int = 8, per_class: int = 6) -> ToyDataset:
    classes = list(range(n_classes)) if split == "train" else list(range(n_classes, n_classes + 6))
    return ToyDataset(classes, per_class, transform)


class TinyNet(nn.Module):
    def __init__(self, embedding_dim: int = 8, dropout: float = 0.0) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(DIM, 16), nn.ReLU(), nn.Dropout(dropout))
        self.head = nn.Linear(16, embedding_dim)
        self.embedding_dim = embedding_dim

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.normalize(self.head(self.backbone(x)), dim=1)

    def backbone_parameters(self) -> Any:
        return self.backbone.parameters()

    def head_parameters(self) -> Any:
        return self.head.parameters()

    def train_transform(self) -> AddNoise:
        return AddNoise()

    def eval_transform(self) -> None:
        return None


def tiny_model(embedding_dim: int = 8, dropout: float = 0.0) -> TinyNet:
    return TinyNet(embedding_dim, dropout)


class StandInPKSampler:
    """P classes x K items per batch, reshuffled per epoch from (seed, epoch)."""

    def __init__(self, labels: list[int], p: int, k: int, seed: int = 0, small_class_policy: str = "replace") -> None:
        self.labels = np.asarray(labels)
        self.p, self.k, self.seed, self.epoch = p, k, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.labels) // (self.p * self.k)

    def __iter__(self) -> Any:
        rng = np.random.default_rng([self.seed, self.epoch])
        classes = np.unique(self.labels)
        for _ in range(len(self)):
            chosen = rng.choice(classes, self.p, replace=False)
            batch = []
            for c in chosen:
                members = np.flatnonzero(self.labels == c)
                batch.extend(rng.choice(members, self.k, replace=len(members) < self.k).tolist())
            yield batch


def stand_in_evaluator(embeddings: Tensor, labels: Tensor, k_values: Any = (1,), **_: Any) -> dict[str, float]:
    sim = embeddings @ embeddings.T
    sim.fill_diagonal_(-float("inf"))
    nearest = sim.argmax(dim=1)
    r1 = float((labels[nearest] == labels).float().mean())
    return {"recall@1": r1, "map@r": r1}


def _exists(entry: str) -> bool:
    module, _, attr = entry.partition(":")
    try:
        return hasattr(importlib.import_module(module), attr)
    except ImportError:
        return False


@pytest.fixture
def toy_registries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(builders.DATASET_REGISTRY, "toy", toy_dataset)
    monkeypatch.setitem(builders.MODEL_REGISTRY, "tiny", tiny_model)
    from deepmetric.data.registry import SAMPLERS

    if not isinstance(SAMPLERS["pk"], str) or not _exists(SAMPLERS["pk"]):
        monkeypatch.setitem(SAMPLERS, "pk", StandInPKSampler)
    if not isinstance(evaluate.EVALUATOR, str) or not _exists(evaluate.EVALUATOR):
        monkeypatch.setattr(evaluate, "EVALUATOR", stand_in_evaluator)


def toy_config(*overrides: str) -> Config:
    base = {
        "seed": 3,
        "device": "cpu",
        "data": {"name": "toy", "num_workers": 0, "val_fraction": 0.25},
        "sampler": {"p": 3, "k": 3},
        "model": {"name": "tiny", "embedding_dim": 8, "dropout": 0.1},
        "loss": {"name": "contrastive"},
        "optimizer": {"name": "sgd", "lr": 0.05},
        "scheduler": {"name": "cosine", "warmup_steps": 2},
        "trainer": {"steps": 8, "eval_every": 4, "checkpoint_every": 3, "log_every": 2},
        "eval": {"select_metric": "recall@1", "batch_size": 16},
    }
    return load_config(base, list(overrides))
