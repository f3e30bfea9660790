"""Scene classification over repeated splits (``protocol.name: repeated_splits`` with
``eval.protocol: classification``): split properties, the planner, the prediction heads against
independent loops, and the summary maths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor, nn

from deepmetric.config import EvalConfig, load_config
from deepmetric.data.scene_split import scene_folder_dataset, scene_split_indices
from deepmetric.errors import ConfigError, DataError
from deepmetric.losses import build_loss
from deepmetric.losses.center_structured import CenterStructuredLoss
from deepmetric.losses.classification import Hybrid
from deepmetric.losses.contracts import find_centers, find_classifier
from deepmetric.run_files import read_metrics, read_summary
from deepmetric.training import load_checkpoint
from deepmetric.training.eval_protocols import EvalInputs
from deepmetric.training.eval_protocols.classification import ClassificationProtocol
from deepmetric.training.protocols import plan_protocol, run_protocol

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
        "eval.protocol=classification", "eval.select_metric=accuracy", "eval.k_values=[1]", "eval.batch_size=32",
        "eval.baseline=false", "protocol.name=repeated_splits", "protocol.repeats=2", "protocol.test_fraction=0.34",
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


def test_repeated_splits_plan_selects_the_split(scenes: Path, tmp_path: Path) -> None:
    plan = plan_protocol(tiny_config(scenes, "seed=7", "protocol.test_fraction=0.3"), tmp_path)
    assert [(s.name, s.config.seed) for s in plan] == [("split_0", 7), ("split_1", 8)]
    assert plan[0].config.data.params == {"split_seed": 7, "test_fraction": 0.3}
    folder = plan_protocol(tiny_config(scenes, "data.name=folder", "seed=4"), tmp_path)[0]
    assert folder.config.seed == 4
    assert folder.config.data.params == {"split_by": "items", "split_seed": 4, "test_fraction": 0.34}
    with pytest.raises(ConfigError, match="scene_folder"):
        plan_protocol(tiny_config(scenes, "data.name=olivetti"), tmp_path)
    with pytest.raises(ConfigError, match="val_by=items"):
        plan_protocol(tiny_config(scenes, "data.val_by=classes"), tmp_path)


# ------------------------------------------------------------------ heads


def test_heads_follow_the_trained_terms() -> None:
    full = CenterStructuredLoss(3, 4)
    assert find_classifier(full) is full and find_centers(full) is full
    ce_only = CenterStructuredLoss(3, 4, use_structured=False, use_center=False)
    assert find_classifier(ce_only) is ce_only and find_centers(ce_only) is None
    no_ce = CenterStructuredLoss(3, 4, use_ce=False)
    assert find_classifier(no_ce) is None and find_centers(no_ce) is no_ce
    hybrid = Hybrid(build_loss("contrastive"), num_classes=3, embedding_dim=4)
    assert find_classifier(hybrid) is not None and find_centers(hybrid) is None
    plain = build_loss("contrastive")
    assert find_classifier(plain) is None and find_centers(plain) is None


class _Vectors(torch.utils.data.Dataset):
    """Fixed vectors with labels and class names (an evaluated split, or the support split)."""

    def __init__(self, x: Tensor, labels: list[int], names: list[str]) -> None:
        self.x, self.labels, self.class_names = x, labels, names

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.x[i], self.labels[i]


def _inputs(loss: nn.Module, test: _Vectors, support: _Vectors, k: int = 1) -> EvalInputs:
    config = EvalConfig(k_values=[k], metrics=["recall@k"], batch_size=8)
    return EvalInputs(model=nn.Identity(), loss=loss, dataset=test, config=config, device=torch.device("cpu"),
                      support=lambda: support, class_names=test.class_names)


def test_heads_against_independent_loops_with_remapped_training_labels() -> None:
    """The training split holds classes 1, 3, 4 of five (0 and 2 have no training item): the
    classifier's index n is the dataset label [1, 3, 4][n]. Every head is recomputed by hand."""
    torch.manual_seed(0)
    names = ["a", "b", "c", "d", "e"]
    trained = [1, 3, 4]
    loss = CenterStructuredLoss(3, 4)
    support_labels = [1, 1, 3, 3, 3, 4, 4]
    support = _Vectors(torch.randn(7, 4), support_labels, names)
    test_labels = [1, 3, 4, 4, 1, 3]
    test = _Vectors(torch.randn(6, 4), test_labels, names)
    for k in (1, 3):
        metrics = ClassificationProtocol(EvalConfig(k_values=[k], metrics=["recall@k"])).evaluate(
            _inputs(loss, test, support, k))
        w, b = loss.classifier.weight.detach().double(), loss.classifier.bias.detach().double()
        centers = loss.centers.detach().double()
        softmax, nearest, knn = [], [], []
        for f in test.x.double():
            scores = [float(w[n] @ f + b[n]) for n in range(3)]
            dists = [float(((f - centers[n]) ** 2).sum()) for n in range(3)]
            softmax.append(trained[max(range(3), key=lambda n: (scores[n], -n))])
            nearest.append(trained[min(range(3), key=lambda n: (dists[n], n))])
            sims = [float(torch.nn.functional.cosine_similarity(f, s.double(), dim=0)) for s in support.x]
            order = sorted(range(7), key=lambda j: (-sims[j], j))[:k]
            votes: dict[int, int] = {}
            for j in order:
                votes[support_labels[j]] = votes.get(support_labels[j], 0) + 1
            best = max(votes.values())
            knn.append(next(support_labels[j] for j in order if votes[support_labels[j]] == best))
        for head, predicted in (("softmax", softmax), ("nearest_center", nearest), ("knn", knn)):
            correct = [p == t for p, t in zip(predicted, test_labels)]
            assert metrics[f"accuracy/{head}"] == pytest.approx(sum(correct) / len(correct)), (k, head)
            for c in sorted(set(test_labels)):
                hits = [p == t for p, t in zip(predicted, test_labels) if t == c]
                assert metrics[f"per_class_accuracy/{head}/{names[c]}"] == pytest.approx(sum(hits) / len(hits))
        assert metrics["accuracy"] == metrics["accuracy/softmax"]
        assert "per_class_accuracy/softmax/a" not in metrics  # a class absent from the split


def test_a_zero_shot_split_is_refused_in_one_line() -> None:
    loss = CenterStructuredLoss(2, 4)
    support = _Vectors(torch.randn(4, 4), [0, 0, 1, 1], ["a", "b", "c"])
    unseen = _Vectors(torch.randn(2, 4), [2, 2], ["a", "b", "c"])
    renamed = _Vectors(torch.randn(4, 4), [0, 0, 1, 1], ["a", "z"])  # re-indexed classes of another split
    for test in (unseen, renamed):
        with pytest.raises(ConfigError, match="data.val_by=items") as err:
            ClassificationProtocol(EvalConfig()).evaluate(_inputs(loss, test, support))
        assert "\n" not in str(err.value)


def test_a_class_disjoint_split_is_refused_before_training(scenes: Path, tmp_path: Path) -> None:
    # folder with split_by=classes: 2 training classes, 1 test class re-indexed as label 0
    cfg = tiny_config(scenes, "protocol.name=single", "data.name=folder",
                      "data.params={split_by: classes, test_fraction: 0.34}", "data.val_fraction=0", "eval.split=test",
                      "sampler.p=2")
    with pytest.raises(ConfigError, match="zero-shot") as err:
        run_protocol(cfg, tmp_path / "z", progress=False, report=False)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "z" / "checkpoints" / "last.pt").exists()


# ------------------------------------------------------------------ whole protocol


def _centers_of(run: Path, which: str) -> np.ndarray:
    return load_checkpoint(run / "checkpoints" / f"{which}.pt")["loss"]["centers"].double().numpy()


def test_repeated_splits_metrics_predictions_and_summary(scenes: Path, tmp_path: Path) -> None:
    out = tmp_path / "exp"
    summary = run_protocol(tiny_config(scenes), out, progress=False, report=False)
    assert [r["params"]["seed"] for r in summary["runs"]] == [0, 1]
    test_sets = []
    for s, seed in enumerate((0, 1)):
        run = out / f"split_{s}"
        metrics = read_metrics(run)
        assert metrics.class_names == list(CLASSES) and metrics.protocol == "classification"
        test = metrics.test or {}
        assert {"accuracy/softmax", "accuracy/nearest_center", "accuracy/knn"} <= set(test)
        # the evaluated items are exactly the seeded test split
        npz = np.load(run / "test_embeddings.npz")
        expected = scene_folder_dataset(scenes, "test", test_fraction=0.34, split_seed=seed).paths
        assert [str(p) for p in npz["paths"]] == [str(p) for p in expected]
        test_sets.append(tuple(expected))
        # nearest center = brute-force argmin of squared distances to the chosen checkpoint's centers
        centers = _centers_of(run, "best")
        brute = []
        for f in npz["embeddings"].astype(np.float64):
            dists = [float(((f - c) ** 2).sum()) for c in centers]
            brute.append(min(range(len(dists)), key=lambda k: (dists[k], k)))
        pred = np.load(run / "test_predictions.npz")
        assert pred["predictions_nearest_center"].tolist() == brute
        assert pred["predictions"].tolist() == pred["predictions_softmax"].tolist()
        assert pred["labels"].tolist() == npz["labels"].tolist()
        assert [str(n) for n in pred["class_names"]] == list(CLASSES)
        correct = [p == t for p, t in zip(brute, npz["labels"].tolist())]
        assert test["accuracy/nearest_center"] == pytest.approx(sum(correct) / len(correct))
    assert test_sets[0] != test_sets[1]
    saved = read_summary(out)
    for head in ("softmax", "nearest_center", "knn"):
        values = [read_metrics(out / f"split_{s}").test[f"accuracy/{head}"] for s in range(2)]
        stat = saved.groups["all"][f"accuracy/{head}"]
        assert stat.values == values
        assert stat.mean == pytest.approx(sum(values) / 2)
        assert stat.std == pytest.approx(abs(values[0] - values[1]) / np.sqrt(2))  # sample std of two values
    # resuming reuses the finished splits (same numbers, no new training)
    mtime = (out / "split_0" / "checkpoints" / "last.pt").stat().st_mtime_ns
    again = run_protocol(tiny_config(scenes), out, resume=True, progress=False, report=False)
    assert again["groups"] == summary["groups"]
    assert (out / "split_0" / "checkpoints" / "last.pt").stat().st_mtime_ns == mtime
    with pytest.raises(ConfigError, match="loss.params"):  # never mixes runs of another config
        run_protocol(tiny_config(scenes, "loss.params={lam_c: 0.5}"), out, resume=True, progress=False, report=False)


def test_ce_only_run_has_no_center_head_and_last_checkpoint(scenes: Path, tmp_path: Path) -> None:
    cfg = tiny_config(scenes, "loss.params={use_structured: false, use_center: false}", "eval.checkpoint=last",
                      "protocol.repeats=1")
    summary = run_protocol(cfg, tmp_path / "ce", progress=False, report=False)
    stats = summary["groups"]["all"]
    assert "accuracy/softmax" in stats and "accuracy/nearest_center" not in stats
    assert stats["accuracy"]["values"] == stats["accuracy/softmax"]["values"]
    assert stats["accuracy/softmax"]["std"] == 0.0
    assert summary["runs"][0]["test_step"] == 3


def test_a_loss_without_heads_is_classified_by_knn(scenes: Path, tmp_path: Path) -> None:
    cfg = tiny_config(scenes, "loss.name=contrastive", "loss.params={}", "protocol.repeats=1")
    summary = run_protocol(cfg, tmp_path / "knn", progress=False, report=False)
    test = summary["runs"][0]["test"]
    assert "accuracy/softmax" not in test and "accuracy/nearest_center" not in test
    assert test["accuracy"] == test["accuracy/knn"]


def test_last_checkpoint_is_re_embedded_when_validation_chose_another(scenes: Path, tmp_path: Path) -> None:
    from deepmetric.training import embed, load_trained

    # a constant selection metric: ties keep the first evaluation, so best.pt is step 0
    cfg = tiny_config(scenes, "eval.select_metric=n_queries", "eval.checkpoint=last", "protocol.repeats=1")
    summary = run_protocol(cfg, tmp_path / "e", progress=False, report=False)
    run = tmp_path / "e" / "split_0"
    assert summary["runs"][0]["test_step"] == 3
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
    # the validation-chosen checkpoint (eval.checkpoint=best) predicts with step 0's weights
    best = run_protocol(load_config(cfg, ["eval.checkpoint=best"]), tmp_path / "b", progress=False, report=False)
    assert best["runs"][0]["test_step"] == 0
    step0 = load_checkpoint(tmp_path / "b" / "split_0" / "checkpoints" / "best.pt")
    assert int(step0["step"]) == 0
    brute = []
    for f in np.load(tmp_path / "b" / "split_0" / "test_embeddings.npz")["embeddings"].astype(np.float64):
        dists = [float(((f - c) ** 2).sum()) for c in step0["loss"]["centers"].double().numpy()]
        brute.append(min(range(3), key=lambda c: (dists[c], c)))
    assert np.load(tmp_path / "b" / "split_0" / "test_predictions.npz")["predictions_nearest_center"].tolist() == brute
