"""Scene classification over repeated splits: split properties, prediction heads, summary maths."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deepmetric.config import load_config
from deepmetric.data.scene_split import scene_folder_dataset, scene_split_indices
from deepmetric.errors import ConfigError, DataError
from deepmetric.experiments.scene_classification import (
    prediction_heads,
    run_repeated_splits,
    split_config,
)
from deepmetric.losses.center_structured import CenterStructuredLoss
from deepmetric.losses.classification import Hybrid
from deepmetric.losses import build_loss
from deepmetric.training import load_checkpoint

CLASSES = ("beach", "forest", "river")
PER_CLASS = 8


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 classes x 8 tiny PNGs; the class sets the dominant colour."""
    root = tmp_path_factory.mktemp("scenes")
    rng = np.random.default_rng(0)
    for c, name in enumerate(CLASSES):
        (root / name).mkdir()
        for i in range(PER_CLASS):
            image = rng.integers(0, 80, size=(12, 12, 3), dtype=np.uint8)
            image[..., c] += 150
            Image.fromarray(image).save(root / name / f"img_{i}.png")
    return root


def tiny_config(root: Path, *overrides: str):  # type: ignore[no-untyped-def]
    return load_config(None, [
        "device=cpu", "data.name=scene_folder", f"data.root={root}", "data.num_workers=0",
        "data.val_by=items", "data.val_fraction=0.4", "data.image_size=16",
        "model.backbone=test_efficientnet", "model.pretrained=false", "model.embedding_dim=8",
        "sampler.p=3", "sampler.k=2", "trainer.steps=3", "trainer.eval_every=0", "trainer.log_every=1",
        "scheduler.warmup_steps=1", "loss.name=center_structured", "optimizer.loss_lr_mult=10",
        "eval.select_metric=recall@1", "eval.k_values=[1]", "eval.batch_size=32", "eval.baseline=false",
        *overrides,
    ])


# ------------------------------------------------------------------ splits


def test_split_is_stratified_disjoint_covering_and_repeatable(scenes: Path) -> None:
    labels = [c for c in range(3) for _ in range(10)] + [3] * 7
    train, test = scene_split_indices(labels, 0.2, split_seed=5)
    assert set(train).isdisjoint(test) and sorted(train + test) == list(range(len(labels)))
    for c, n in ((0, 10), (1, 10), (2, 10), (3, 7)):  # round(n * 0.2) of every class in test
        assert sum(labels[i] == c for i in test) == round(n * 0.2)
    assert scene_split_indices(labels, 0.2, split_seed=5) == (train, test)
    assert scene_split_indices(labels, 0.2, split_seed=6)[1] != test

    a = scene_folder_dataset(scenes, "test", test_fraction=0.34, split_seed=3)
    b = scene_folder_dataset(scenes, "test", test_fraction=0.34, split_seed=3, seed=99)  # split_seed wins
    tr = scene_folder_dataset(scenes, "train", test_fraction=0.34, split_seed=3)
    assert a.paths == b.paths and set(a.paths).isdisjoint(tr.paths)
    assert len(a) + len(tr) == 3 * PER_CLASS
    assert a.class_names == tr.class_names == list(CLASSES)
    for c, name in enumerate(CLASSES):  # labels index the whole folder's classes
        assert all(Path(p).parent.name == name for p, y in zip(a.paths, a.labels) if y == c)
        assert a.labels.count(c) == 3  # round(8 * 0.34)
    # split_seed null -> the run seed
    assert scene_folder_dataset(scenes, "test", seed=3, test_fraction=0.34).paths == a.paths


def test_per_class_cap_keeps_a_seeded_subset(scenes: Path) -> None:
    tr = scene_folder_dataset(scenes, "train", test_fraction=0.25, split_seed=1, max_per_class=4)
    te = scene_folder_dataset(scenes, "test", test_fraction=0.25, split_seed=1, max_per_class=4)
    assert all(tr.labels.count(c) == 3 and te.labels.count(c) == 1 for c in range(3))
    again = scene_folder_dataset(scenes, "train", test_fraction=0.25, split_seed=1, max_per_class=4)
    assert again.paths == tr.paths


def test_split_errors(scenes: Path) -> None:
    with pytest.raises(ConfigError, match="test_fraction"):
        scene_split_indices([0, 0, 1, 1], 1.0, 0)
    with pytest.raises(ConfigError, match="max_per_class"):
        scene_split_indices([0, 0, 1, 1], 0.5, 0, max_per_class=1)
    with pytest.raises(DataError, match="fewer than 2"):
        scene_split_indices([0, 0, 1], 0.5, 0)


def test_split_config_selects_the_split(scenes: Path) -> None:
    cfg = split_config(tiny_config(scenes), 7, 0.3)
    assert cfg.seed == 7 and cfg.data.params == {"split_seed": 7, "test_fraction": 0.3}
    folder = split_config(tiny_config(scenes, "data.name=folder"), 4, 0.2)
    assert folder.seed == 4 and folder.data.params == {"split_by": "items", "test_fraction": 0.2}
    with pytest.raises(ConfigError, match="scene_folder"):
        split_config(tiny_config(scenes, "data.name=olivetti"), 0, 0.2)
    with pytest.raises(ConfigError, match="val_by=items"):
        split_config(tiny_config(scenes, "data.val_by=classes"), 0, 0.2)


# ------------------------------------------------------------------ heads


def test_prediction_heads_follow_the_trained_terms() -> None:
    full = CenterStructuredLoss(3, 4)
    assert set(prediction_heads(full)[0]) == {"softmax", "nearest_center"}
    ce_only = CenterStructuredLoss(3, 4, use_structured=False, use_center=False)
    heads, missing = prediction_heads(ce_only)
    assert set(heads) == {"softmax"} and "not trained" in missing["nearest_center"]
    no_ce = CenterStructuredLoss(3, 4, use_ce=False)
    assert set(prediction_heads(no_ce)[0]) == {"nearest_center"}
    hybrid = Hybrid(build_loss("contrastive"), num_classes=3, embedding_dim=4)
    assert set(prediction_heads(hybrid)[0]) == {"softmax"}
    assert prediction_heads(build_loss("contrastive"))[0] == {}
    e = torch.randn(5, 4)
    assert torch.equal(prediction_heads(full)[0]["softmax"](e), full.classifier(e).argmax(1))


# ------------------------------------------------------------------ whole experiment


def test_repeated_splits_reports_and_summary(scenes: Path, tmp_path: Path) -> None:
    summary = run_repeated_splits(tiny_config(scenes), 2, 0.34, tmp_path / "exp")
    assert summary["split_seeds"] == [0, 1] and summary["class_names"] == list(CLASSES)
    test_sets = []
    for s, seed in enumerate(summary["split_seeds"]):
        run = tmp_path / "exp" / f"split_{s}"
        report = json.loads((run / "classification_report.json").read_text())
        assert set(report["heads"]) == {"softmax", "nearest_center"}
        # the evaluated items are exactly the seeded test split
        expected = scene_folder_dataset(scenes, "test", test_fraction=0.34, split_seed=seed).paths
        assert report["test_paths"] == expected
        test_sets.append(tuple(expected))
        # nearest center = brute-force argmin of squared distances to the checkpoint's centers
        npz = np.load(run / "test_embeddings.npz")
        centers = load_checkpoint(run / "checkpoints" / "best.pt")["loss"]["centers"].double().numpy()
        brute = []
        for f in npz["embeddings"].astype(np.float64):
            dists = [float(((f - c) ** 2).sum()) for c in centers]
            brute.append(min(range(len(dists)), key=lambda k: (dists[k], k)))
        pred = np.load(run / "test_predictions.npz")
        assert pred["predictions_nearest_center"].tolist() == brute
        assert pred["predictions"].tolist() == pred["predictions_softmax"].tolist()
        assert pred["labels"].tolist() == npz["labels"].tolist()
        acc = np.mean(np.asarray(brute) == npz["labels"])
        assert report["heads"]["nearest_center"]["accuracy"] == pytest.approx(acc)
    assert test_sets[0] != test_sets[1]
    for head in ("softmax", "nearest_center"):
        values = [json.loads((tmp_path / "exp" / f"split_{s}" / "classification_report.json").read_text())
                  ["heads"][head]["accuracy"] for s in range(2)]
        stat = summary["heads"][head]["accuracy"]
        assert stat["values"] == values
        assert stat["mean"] == pytest.approx(np.mean(values))
        assert stat["std"] == pytest.approx(np.std(values, ddof=1))
        assert np.sum(summary["heads"][head]["confusion_matrix"]) == 2 * 3 * 3
    md = (tmp_path / "exp" / "summary.md").read_text().splitlines()
    assert sum(line.startswith("| softmax |") for line in md) == 1
    assert json.loads((tmp_path / "exp" / "summary.json").read_text())["heads"].keys() == summary["heads"].keys()
    # a second call reuses the finished splits (same numbers, no new training)
    mtime = (tmp_path / "exp" / "split_0" / "checkpoints" / "last.pt").stat().st_mtime_ns
    again = run_repeated_splits(tiny_config(scenes), 2, 0.34, tmp_path / "exp")
    assert again["heads"] == summary["heads"]
    assert (tmp_path / "exp" / "split_0" / "checkpoints" / "last.pt").stat().st_mtime_ns == mtime
    with pytest.raises(ConfigError, match="trainer.steps"):  # never mixes runs of another config
        run_repeated_splits(tiny_config(scenes, "trainer.steps=4"), 2, 0.34, tmp_path / "exp")


def test_ce_only_run_has_no_center_head_and_last_checkpoint(scenes: Path, tmp_path: Path) -> None:
    cfg = tiny_config(scenes, "loss.params={use_structured: false, use_center: false}")
    summary = run_repeated_splits(cfg, 1, 0.34, tmp_path / "ce", checkpoint="last")
    assert set(summary["heads"]) == {"softmax"} and "nearest_center" in summary["unavailable"]
    assert summary["heads"]["softmax"]["accuracy"]["std"] == 0.0
    assert summary["splits"][0]["checkpoint_step"] == 3


def test_a_loss_without_a_classifier_is_refused_before_training(scenes: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ce_weight"):
        run_repeated_splits(tiny_config(scenes, "loss.name=contrastive"), 1, 0.34, tmp_path / "x")
    assert not (tmp_path / "x" / "split_0").exists()


def test_last_checkpoint_is_re_embedded_when_validation_chose_another(scenes: Path, tmp_path: Path) -> None:
    from deepmetric.training import embed, load_trained

    # a constant selection metric: ties keep the first evaluation, so best.pt is step 0
    cfg = tiny_config(scenes, "eval.select_metric=n_queries")
    last = run_repeated_splits(cfg, 1, 0.34, tmp_path / "e", checkpoint="last")
    run = tmp_path / "e" / "split_0"
    assert last["splits"][0]["checkpoint_step"] == 3
    report = json.loads((run / "classification_report.json").read_text())
    assert "warning" not in report
    model, loss, _ = load_trained(run, "last")
    test = scene_folder_dataset(scenes, "test", transform=model.eval_transform(), test_fraction=0.34, split_seed=0)
    emb, labels = embed(model, test)
    emb64 = emb.double()
    w, b = loss.classifier.weight.detach().double(), loss.classifier.bias.detach().double()
    centers = loss.centers.detach().double()
    softmax, nearest = [], []
    for f in emb64:
        scores = [float(w[c] @ f + b[c]) for c in range(3)]
        dists = [float(((f - centers[c]) ** 2).sum()) for c in range(3)]
        softmax.append(max(range(3), key=lambda c: (scores[c], -c)))
        nearest.append(min(range(3), key=lambda c: (dists[c], c)))
    pred = np.load(run / "test_predictions.npz")
    assert pred["labels"].tolist() == labels.tolist()
    assert pred["predictions_softmax"].tolist() == softmax
    assert pred["predictions_nearest_center"].tolist() == nearest
    # asking for the validation-chosen checkpoint now predicts with the untrained step 0, and says so
    best = run_repeated_splits(cfg, 1, 0.34, tmp_path / "e", checkpoint="best")
    assert best["splits"][0]["checkpoint_step"] == 0
    assert "untrained" in json.loads((run / "classification_report.json").read_text())["warning"]
