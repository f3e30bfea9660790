"""Skin-lesion pipeline: stratified folds, loaders, triplet sampler from the config, and
end-to-end cross-validation through the kfold protocol with the diagnostic evaluation."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepmetric.config import load_config
from deepmetric.data.lesions import isic2017_dataset, ph2_dataset, select_split
from deepmetric.data.splits import stratified_folds
from deepmetric.errors import ConfigError, DataError
from deepmetric.run_files import read_metrics, read_summary
from deepmetric.training.builders import build_sampler
from deepmetric.training.protocols import plan_protocol, run_protocol

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"  # ../shared/data from the repo root
PH2_CLASSES = ["common_nevus", "atypical_nevus", "melanoma"]


def _fake_ph2(root: Path, counts: tuple[int, int, int] = (8, 8, 6), size: int = 24) -> Path:
    """A PH2-layout tree (labels.csv + images/) of tiny images whose colour depends on the class."""
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for c, n in enumerate(counts):
        for i in range(n):
            name = f"IMD{c}{i:02d}.png"
            base = np.zeros((size, size, 3))
            base[..., c] = 200
            pixels = np.clip(base + rng.normal(0, 30, base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / "images" / name)
            rows.append((name, PH2_CLASSES[c]))
    with (root / "labels.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "diagnosis"])
        writer.writerows(rows)
    return root


# ------------------------------------------------------------------------------------- folds


def test_stratified_folds_are_disjoint_cover_every_item_once_and_repeat() -> None:
    labels = [0] * 80 + [1] * 80 + [2] * 40  # PH2's class sizes
    folds = stratified_folds(labels, 5, seed=3)
    assert len(folds) == 5
    seen = Counter(int(i) for fold in folds for i in fold)
    assert sorted(seen) == list(range(200)) and set(seen.values()) == {1}  # every item exactly once
    for fold in folds:  # every class split in proportion: 16 / 16 / 8 per fold
        counts = Counter(labels[int(i)] for i in fold)
        assert counts == {0: 16, 1: 16, 2: 8}
    again = stratified_folds(labels, 5, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(folds, again))
    other = stratified_folds(labels, 5, seed=4)
    assert not all(np.array_equal(a, b) for a, b in zip(folds, other))


def test_select_split_train_is_the_complement_of_the_test_fold() -> None:
    labels = [0] * 10 + [1] * 10 + [2] * 5
    for fold in range(5):
        test = select_split(labels, "test", fold=fold, n_folds=5, split_seed=1)
        train = select_split(labels, "train", fold=fold, n_folds=5, split_seed=1)
        assert set(test).isdisjoint(train) and sorted(test + train) == list(range(25))
        assert Counter(labels[i] for i in test) == {0: 2, 1: 2, 2: 1}
    # without a fold: a per-class test fraction, at least one item per class
    test = select_split(labels, "test", test_fraction=0.2, split_seed=0)
    assert Counter(labels[i] for i in test) == {0: 2, 1: 2, 2: 1}


def test_folds_refuse_a_class_smaller_than_the_fold_count() -> None:
    with pytest.raises(DataError, match="fewer than 5 items"):
        stratified_folds([0] * 10 + [1] * 3, 5, seed=0)
    with pytest.raises(ConfigError, match="fold must be in 0..4"):
        select_split([0] * 10 + [1] * 10, "test", fold=5, n_folds=5)


def test_ph2_loader_folds_match_stratified_folds(tmp_path: Path) -> None:
    root = _fake_ph2(tmp_path / "ph2")
    test = ph2_dataset(root, split="test", fold=1, n_folds=3, split_seed=7)
    train = ph2_dataset(root, split="train", fold=1, n_folds=3, split_seed=7)
    assert set(test.paths).isdisjoint(train.paths) and len(test) + len(train) == 22
    with (root / "labels.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    labels = [PH2_CLASSES.index(r["diagnosis"]) for r in rows]
    expected = {str(root / "images" / rows[i]["image"]) for i in stratified_folds(labels, 3, 7)[1]}
    assert set(test.paths) == expected
    assert test.class_names == PH2_CLASSES
    assert [PH2_CLASSES[y] for y in test.labels] == [r["diagnosis"] for r in rows if str(root / "images" / r["image"]) in expected]


def test_isic2017_trained_model_can_be_tested_on_ph2(tmp_path: Path) -> None:
    isic = tmp_path / "isic"
    (isic / "ISIC-2017_Training_Data").mkdir(parents=True)
    lines = ["image_id,melanoma,seborrheic_keratosis"]
    for i, (mel, sk) in enumerate([(0, 0), (1, 0), (0, 1), (0, 0)]):
        Image.new("RGB", (8, 8)).save(isic / "ISIC-2017_Training_Data" / f"ISIC_{i}.jpg")
        lines.append(f"ISIC_{i},{mel},{sk}")
    (isic / "ISIC-2017_Training_Part3_GroundTruth.csv").write_text("\n".join(lines) + "\n")
    ph2_root = _fake_ph2(tmp_path / "ph2", counts=(2, 3, 1), size=8)
    train = isic2017_dataset(isic, split="train")
    test = isic2017_dataset(isic, split="test", test_ph2_root=ph2_root)
    assert train.labels == [0, 2, 1, 0] and train.class_names == test.class_names
    # both nevus classes -> nevus (0), melanoma -> melanoma (2)
    assert sorted(test.labels) == [0, 0, 0, 0, 0, 2]


# ------------------------------------------------------------------------------------- config


def test_sampler_name_triplet_builds_the_triplet_batch_sampler() -> None:
    from deepmetric.data.triplet_sampler import TripletBatchSampler

    labels = [0] * 10 + [1] * 10 + [2] * 5
    config = load_config(None, ["sampler.name=triplet", "sampler.p=4"])
    sampler = build_sampler(labels, config.sampler, seed=0)
    assert isinstance(sampler, TripletBatchSampler)
    assert sampler.triplets_per_batch == 4 and len(sampler) == -(-25 // 12)  # ceil(N / (3 x triplets))
    for batch in sampler:
        b = len(batch) // 3
        assert len(batch) == 12
        assert all(labels[batch[i]] == labels[batch[b + i]] and labels[batch[i]] != labels[batch[2 * b + i]]
                   for i in range(b))
    config = load_config(None, ["sampler.name=triplet", "sampler.triplets_per_batch=6", "sampler.batches_per_epoch=3"])
    sampler = build_sampler(labels, config.sampler, seed=0)
    assert sampler.triplets_per_batch == 6 and len(sampler) == 3
    default = build_sampler(labels, load_config(None, ["sampler.p=3"]).sampler, seed=0)
    assert load_config(None).sampler.name == "pk" and not isinstance(default, TripletBatchSampler)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("sampler.nmae=triplet", "sampler.name"),
        ("sampler.triplets_per_bach=4", "sampler.triplets_per_batch"),
        ("sampler.batches_per_epch=4", "sampler.batches_per_epoch"),
        ("optimizer.lrr=0.1", "optimizer.lr"),
    ],
)
def test_config_typos_still_name_the_closest_key(override: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=rf"did you mean '{expected}'"):
        load_config(None, [override])


def test_bad_sampler_name_and_kfold_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="sampler.name"):
        load_config(None, ["sampler.name=triplets"])
    with pytest.raises(ConfigError, match="kfold needs a dataset loader with the parameters fold"):
        plan_protocol(load_config(None, ["data.name=scene_folder", "data.val_by=items", "protocol.name=kfold"]), tmp_path)
    with pytest.raises(ConfigError, match="data.val_by=items"):
        plan_protocol(load_config(None, ["data.name=ph2", "eval.protocol=diagnostic", "protocol.name=kfold"]), tmp_path)


# ------------------------------------------------------------------------------------- end to end


def _tiny_config(root: Path, *overrides: str):  # type: ignore[no-untyped-def]
    return load_config({
        "seed": 0,
        "data": {"name": "ph2", "root": str(root), "image_size": 32, "val_fraction": 0.34, "val_by": "items",
                 "num_workers": 0},
        "sampler": {"name": "triplet", "p": 3},
        "model": {"name": "demal", "pretrained": False, "embedding_dim": 16, "freeze_bn": False},
        "loss": {"name": "triplet_hybrid"},
        "scheduler": {"warmup_steps": 1},
        "trainer": {"steps": 2, "eval_every": 0, "checkpoint_every": 0, "log_every": 1},
        "eval": {"protocol": "diagnostic", "checkpoint": "last", "heatmaps": 2, "baseline": False, "batch_size": 16,
                 "select_metric": "precision@1", "k_values": [1, 2], "metrics": ["precision@1", "recall@k"]},
        "protocol": {"name": "kfold", "folds": 2, "split_seed": 0},
    }, list(overrides))


def test_tiny_cross_validation_writes_summary_metrics_and_figures(tmp_path: Path) -> None:
    root = _fake_ph2(tmp_path / "ph2", counts=(12, 12, 8))
    config = _tiny_config(root)
    out = tmp_path / "cv"
    summary = run_protocol(config, out, progress=False)
    assert read_summary(out).model_dump(mode="json") == summary
    assert summary["protocol"] == "kfold" and summary["class_names"] == PH2_CLASSES
    assert [r["name"] for r in summary["runs"]] == ["fold_0", "fold_1"]
    for key in ("accuracy", "balanced_accuracy", "sensitivity", "specificity", "auc", "average_precision",
                "binary/sensitivity", "binary/auc"):
        stat = summary["groups"]["all"][key]
        assert len(stat["values"]) == 2 and all(0.0 <= v <= 1.0 for v in stat["values"])
        assert stat["mean"] == pytest.approx(np.mean(stat["values"]))
        assert stat["std"] == pytest.approx(np.std(stat["values"], ddof=1))
    tested: list[str] = []
    for fold in (0, 1):
        run = out / f"fold_{fold}"
        metrics = read_metrics(run)
        assert metrics.protocol == "diagnostic" and metrics.test_step == 2  # eval.checkpoint=last
        test = metrics.test or {}
        with np.load(run / "test_predictions.npz") as npz:
            probs, y, pred = npz["probabilities"], npz["labels"], npz["predictions"]
            assert [str(n) for n in npz["class_names"]] == PH2_CLASSES
        assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
        # accuracy, melanoma sensitivity / specificity recomputed by hand from the saved probabilities
        argmax = [max(range(3), key=lambda c: (p[c], -c)) for p in probs]
        assert list(pred) == argmax
        assert test["accuracy"] == pytest.approx(sum(p == t for p, t in zip(argmax, y)) / len(y))
        mel = [i for i in range(len(y)) if y[i] == 2]
        rest = [i for i in range(len(y)) if y[i] != 2]
        assert test["sensitivity"] == pytest.approx(sum(argmax[i] == 2 for i in mel) / len(mel))
        assert test["specificity"] == pytest.approx(sum(argmax[i] != 2 for i in rest) / len(rest))
        # binary view: melanoma if its probability is at least the rest's
        binary = [1 if p[2] > 1 - p[2] else 0 for p in probs]
        assert test["binary/sensitivity"] == pytest.approx(sum(binary[i] for i in mel) / len(mel))
        report = (run / "report.html").read_text()
        for stem in ("roc", "heatmaps"):
            png = run / "figures" / f"{stem}.png"
            assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert f"figures/{stem}.png" in report
            caption = (run / "figures" / f"{stem}.txt").read_text().strip()
            assert caption and caption in report.replace("&#x27;", "'")
        tested += list(np.load(run / "test_embeddings.npz")["paths"])
    assert len(tested) == len(set(tested)) == 32  # the test folds cover every image once
    # resuming the finished protocol reuses the folds
    again = run_protocol(config, out, resume=True, progress=False)
    assert again["groups"] == summary["groups"]


def test_diagnostic_needs_a_classifier_and_a_positive_class(tmp_path: Path) -> None:
    root = _fake_ph2(tmp_path / "ph2", counts=(6, 6, 6))
    single = ["protocol.name=single", "data.params={fold: 0, n_folds: 2, split_seed: 0}", "trainer.steps=1",
              "data.val_fraction=0", "eval.split=test"]
    with pytest.raises(ConfigError, match="loss.name=triplet_hybrid") as err:
        run_protocol(_tiny_config(root, *single, "loss.name=contrastive", "sampler.name=pk", "sampler.p=3",
                                  "sampler.k=2"), tmp_path / "a", progress=False, report=False)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="eval.positive_class 'nevus'"):
        run_protocol(_tiny_config(root, *single, "eval.positive_class=nevus"), tmp_path / "b", progress=False,
                     report=False)
    # a named positive class works: binary = common nevus vs the rest
    metrics = run_protocol(_tiny_config(root, *single, "eval.positive_class=common_nevus", "eval.heatmaps=0"),
                           tmp_path / "c", progress=False, report=False)
    with np.load(tmp_path / "c" / "test_predictions.npz") as npz:
        y, pred = npz["labels"], npz["predictions"]
    nevi = [i for i in range(len(y)) if y[i] == 0]
    assert metrics["test"]["sensitivity"] == pytest.approx(sum(pred[i] == 0 for i in nevi) / len(nevi))
    assert not (tmp_path / "c" / "figures" / "heatmaps.png").exists()


@pytest.mark.skipif(not (SHARED / "ph2" / "labels.csv").is_file(), reason="../shared/data/ph2 is not available")
def test_real_ph2_five_folds_hold_16_16_8() -> None:
    train = ph2_dataset(SHARED / "ph2", split="train", fold=0, n_folds=5, split_seed=0)
    test = ph2_dataset(SHARED / "ph2", split="test", fold=0, n_folds=5, split_seed=0)
    assert Counter(test.labels) == {0: 16, 1: 16, 2: 8}
    assert Counter(train.labels) == {0: 64, 1: 64, 2: 32}
