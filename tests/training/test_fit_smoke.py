"""fit() end to end on tiny data: every run-folder file, validation carving, early stopping,
Ctrl-C, loss parameter groups, epochs, config errors, and the real timm embedder."""

from __future__ import annotations

import csv
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset

from deepmetric.config import load_config
from deepmetric.errors import ConfigError
from deepmetric.training import RunPaths, embed, fit, load_checkpoint, load_trained
from deepmetric.training import builders
from deepmetric.training.views import carve_validation
from toy_training import toy_config, toy_dataset, toy_registries  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("toy_registries")


def test_run_folder_has_every_file(tmp_path: Path) -> None:
    config = toy_config()
    summary = fit(config, tmp_path, progress=True)
    paths = RunPaths(tmp_path)
    assert load_config(paths.config) == config
    # log.csv: fixed columns, one row per log_every steps
    rows = list(csv.DictReader(paths.log.open()))
    assert list(rows[0]) == ["step", "epoch", "loss", "lr", "seconds"]
    assert [int(r["step"]) for r in rows] == [2, 4, 6, 8]
    assert all(np.isfinite(float(r["loss"])) for r in rows)
    # metrics.json equals the returned summary
    metrics = json.loads(paths.metrics.read_text())
    assert metrics == summary
    assert [(e["step"], e["split"]) for e in metrics["evaluations"]] == [(0, "val"), (4, "val"), (8, "val")]
    assert metrics["baseline"]["split"] == "test" and "recall@1" in metrics["baseline"]["metrics"]
    values = [e["metrics"]["recall@1"] for e in metrics["evaluations"]]
    first_best = int(np.argmax(values))
    assert metrics["best"] == {"step": metrics["evaluations"][first_best]["step"], "metric": "recall@1", "value": max(values)}
    assert metrics["test_step"] == metrics["best"]["step"]
    assert set(metrics["test"]) >= {"recall@1"}
    # checkpoints
    assert load_checkpoint(paths.last)["step"] == 8
    assert load_checkpoint(paths.best)["step"] == metrics["best"]["step"]
    # test embeddings of the best checkpoint, in dataset order
    test = toy_dataset("test")
    npz = np.load(paths.test_embeddings)
    assert npz["embeddings"].shape == (len(test), 8)
    assert npz["labels"].tolist() == test.labels
    assert npz["paths"].tolist() == test.paths
    model, _, _ = load_trained(tmp_path, "best")
    again, labels = embed(model, test, batch_size=7)
    assert torch.allclose(again, torch.from_numpy(npz["embeddings"]), atol=1e-6)
    assert labels.tolist() == test.labels


def test_validation_is_carved_from_training_classes(tmp_path: Path) -> None:
    config = toy_config()
    model = builders.build_model(config)
    splits = builders.build_datasets(config, model)
    base_train = toy_dataset("train")
    val_classes = {base_train.labels[i] for i in splits.val.indices}
    train_classes = {base_train.labels[i] for i in splits.train.indices}
    assert len(val_classes) == 2 and len(train_classes) == 6
    assert not val_classes & train_classes
    assert not val_classes & set(toy_dataset("test").labels)
    assert sorted(set(splits.train.labels)) == list(range(6))  # remapped for classifier losses
    # items mode: every class keeps items in both parts
    labels = [c for c in range(4) for _ in range(5)]
    tr, va = carve_validation(labels, 0.4, "items", seed=0)
    assert sorted(tr + va) == list(range(20)) and not set(tr) & set(va)
    assert [sum(labels[i] == c for i in va) for c in range(4)] == [2, 2, 2, 2]


def test_early_stopping(tmp_path: Path) -> None:
    # an (almost) frozen network never improves strictly, so patience 1 stops at the first evaluation
    config = toy_config("optimizer.lr=1e-12", "trainer.early_stopping_patience=1", "trainer.steps=20")
    summary = fit(config, tmp_path, progress=False)
    assert summary["stopped_early"] is True
    assert summary["steps"] == 4
    assert summary["best"]["step"] == 0


def test_ctrl_c_finishes_the_step_and_saves_a_resumable_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from deepmetric.training.fit import _Run

    original = _Run.train_step

    def press_ctrl_c(self, inputs, labels):  # type: ignore[no-untyped-def]
        if self.step == 4:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, inputs, labels)

    monkeypatch.setattr(_Run, "train_step", press_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        fit(toy_config(), tmp_path, progress=False)
    assert load_checkpoint(RunPaths(tmp_path).last)["step"] == 5  # the running step completed
    monkeypatch.setattr(_Run, "train_step", original)
    summary = fit(toy_config(), tmp_path, resume=True, progress=False)
    assert summary["steps"] == 8 and "test" in summary


def test_hybrid_loss_gets_num_classes_and_its_own_group(tmp_path: Path) -> None:
    fit(toy_config("loss.ce_weight=0.5", "optimizer.loss_lr_mult=3", "trainer.steps=2"), tmp_path, progress=False)
    state = load_checkpoint(RunPaths(tmp_path).last)
    groups = {g["name"]: g for g in state["optimizer"]["param_groups"]}
    assert set(groups) == {"backbone", "head", "loss"}
    assert groups["loss"]["base_lr"] == pytest.approx(3 * groups["head"]["base_lr"])
    assert groups["backbone"]["base_lr"] == pytest.approx(0.1 * groups["head"]["base_lr"])
    assert state["loss"]["classifier.weight"].shape == (6, 8)  # 8 train classes - 2 for validation


def test_epochs_set_the_number_of_steps(tmp_path: Path) -> None:
    # 6 training classes x 6 items = 36 items; P x K = 9 -> 4 batches per epoch
    summary = fit(toy_config("trainer.steps=null", "trainer.epochs=2", "trainer.eval_every=0"), tmp_path, progress=False)
    assert summary["total_steps"] == 8 and summary["steps"] == 8
    assert [e["step"] for e in summary["evaluations"]] == [0, 8]


def test_config_problems_are_reported_before_training(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="val_fraction"):
        fit(toy_config("data.val_fraction=0"), tmp_path / "a", progress=False)
    with pytest.raises(ConfigError, match="Did you mean 'n_classes'"):
        fit(toy_config("data.params.n_clases=5"), tmp_path / "b", progress=False)
    with pytest.raises(ConfigError, match="does not take backbone"):
        fit(toy_config("model.backbone=resnet18"), tmp_path / "c", progress=False)
    with pytest.raises(ConfigError, match="unknown dataset 'tyo'"):
        fit(toy_config("data.name=tyo"), tmp_path / "d", progress=False)
    with pytest.raises(ConfigError, match="select_metric"):
        fit(toy_config("eval.select_metric=recal@1"), tmp_path / "e", progress=False)
    # selecting on test without a validation split is allowed (and recorded)
    summary = fit(toy_config("data.val_fraction=0", "eval.split=test", "trainer.steps=2"), tmp_path / "f", progress=False)
    assert summary["selection_split"] == "test"
    assert summary["baseline"]["metrics"] == summary["evaluations"][0]["metrics"]


class _Shapes(Dataset):
    """Small PIL images of coloured squares; the class sets colour and position."""

    def __init__(self, classes: range, transform=None) -> None:  # type: ignore[no-untyped-def]
        self.labels = [c for c in classes for _ in range(4)]
        self.transform = transform
        self.paths = [f"img{i}.png" for i in range(len(self.labels))]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):  # type: ignore[no-untyped-def]
        c = self.labels[i]
        rng = np.random.default_rng(i)
        image = rng.integers(0, 60, size=(40, 40, 3), dtype=np.uint8)
        image[(c % 3) * 12:(c % 3) * 12 + 14, (c // 3) * 12:(c // 3) * 12 + 14] = (40 * c) % 255
        img = Image.fromarray(image)
        return (self.transform(img) if self.transform else img), c


def shapes_dataset(split: str, transform=None):  # type: ignore[no-untyped-def]
    return _Shapes(range(0, 6) if split == "train" else range(6, 9), transform)


def test_real_embedder_and_image_transforms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(builders.DATASET_REGISTRY, "shapes", shapes_dataset)
    config = load_config(
        None,
        ["device=cpu", "data.name=shapes", "data.num_workers=0", "data.val_fraction=0.34", "data.image_size=16",
         "model.backbone=test_efficientnet", "model.pretrained=false", "model.embedding_dim=8",
         "sampler.p=2", "sampler.k=2", "trainer.steps=2", "trainer.eval_every=0", "scheduler.warmup_steps=1",
         "eval.select_metric=recall@1", "eval.batch_size=8", "eval.k_values=[1, 2]"],
    )
    summary = fit(config, tmp_path, progress=False)
    assert summary["steps"] == 2
    saved = np.load(RunPaths(str(tmp_path)).test_embeddings)["embeddings"]
    assert saved.shape == (12, 8)
    # the best checkpoint, rebuilt from config.yaml, reproduces the saved test embeddings
    model, _, _ = load_trained(tmp_path, "best")
    again, _ = embed(model, shapes_dataset("test", model.eval_transform()))
    assert torch.allclose(again, torch.from_numpy(saved), atol=1e-5)


SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"  # ../shared/data from the repo root


@pytest.mark.shared_data
@pytest.mark.slow
def test_fit_on_real_olivetti_faces(tmp_path: Path) -> None:
    npz = SHARED / "olivetti"
    files = sorted(npz.glob("*.npz")) if npz.is_dir() else []
    if not files:
        pytest.skip(f"shared data not found at {npz}")
    config = load_config(
        None,
        ["device=cpu", "data.name=olivetti", f"data.root={files[0]}", "data.num_workers=0", "data.image_size=16",
         "model.backbone=test_efficientnet", "model.pretrained=false", "model.embedding_dim=16",
         "sampler.p=4", "sampler.k=3", "trainer.steps=3", "trainer.eval_every=0", "eval.batch_size=100",
         "eval.metrics=[recall@k, map@r]"],
    )
    summary = fit(config, tmp_path, progress=False)
    assert summary["steps"] == 3
    # 20 test people x 10 photos; the baseline and the test metrics are both present and finite
    assert np.load(RunPaths(tmp_path).test_embeddings)["labels"].shape == (200,)
    assert 0.0 <= summary["baseline"]["metrics"]["map@r"] <= 1.0
    assert 0.0 <= summary["test"]["map@r"] <= 1.0


def test_gradient_clipping_bounds_the_first_update(tmp_path: Path) -> None:
    """Plain SGD (no momentum, no decay, constant LR): one step moves the weights by lr_g * g_g per
    group, and with clipping the total gradient norm is at most grad_clip."""
    from deepmetric.training.seed import seed_everything

    def change(run: str, *extra: str) -> tuple[float, float]:
        config = toy_config("trainer.steps=1", "optimizer.momentum=0", "optimizer.weight_decay=0",
                            "optimizer.backbone_lr_mult=1", "scheduler.name=none", "scheduler.warmup_steps=0",
                            "model.dropout=0", *extra)
        fit(config, tmp_path / run, progress=False)
        seed_everything(config.seed)
        before = builders.build_model(config).state_dict()
        after = load_checkpoint(RunPaths(tmp_path / run).last)["model"]
        delta = torch.sqrt(sum(((after[k] - before[k]) ** 2).sum() for k in before))
        return float(delta), config.optimizer.lr

    free, lr = change("free")
    clipped, _ = change("clipped", "trainer.grad_clip=0.001")
    assert free > 10 * lr * 0.001  # the unclipped gradient is far larger than the bound
    assert 0 < clipped <= lr * 0.001 * (1 + 1e-4)
