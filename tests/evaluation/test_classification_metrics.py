"""Classification report (accuracy, per-class accuracy, confusion matrix) against scikit-learn,
and repeated-split summaries against hand-computed means and sample standard deviations."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, recall_score

from deepmetric.errors import DataError, InputError
from deepmetric.evaluation.classification import classification_report, summarize_repeats

NAMES = ["agricultural", "beach", "forest", "harbor"]


def _random(seed: int, n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 4, n)
    y_pred = np.where(rng.random(n) < 0.7, y_true, rng.integers(0, 4, n))
    return y_true, y_pred


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_report_matches_sklearn(seed: int) -> None:
    y_true, y_pred = _random(seed)
    rep = classification_report(y_true, y_pred, NAMES)
    assert rep["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert rep["confusion_matrix"] == confusion_matrix(y_true, y_pred, labels=range(4)).tolist()
    recalls = recall_score(y_true, y_pred, labels=range(4), average=None)
    assert [rep["per_class_accuracy"][n] for n in NAMES] == pytest.approx(list(recalls))
    assert rep["mean_per_class_accuracy"] == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    assert rep["support"] == {n: int((y_true == k).sum()) for k, n in enumerate(NAMES)}
    assert rep["num_samples"] == len(y_true)
    json.dumps(rep)  # plain Python, serialisable


def test_report_accepts_tensors_and_lists_and_hand_example() -> None:
    # true 0 0 1 2, predicted 0 1 1 1 : accuracy 2/4, class 0: 1/2, class 1: 1/1, class 2: 0/1
    rep = classification_report(torch.tensor([0, 0, 1, 2]), [0, 1, 1, 1], ["a", "b", "c", "d"])
    assert rep["accuracy"] == 0.5
    assert rep["per_class_accuracy"] == {"a": 0.5, "b": 1.0, "c": 0.0, "d": None}
    assert rep["mean_per_class_accuracy"] == pytest.approx(0.5)
    assert rep["confusion_matrix"] == [[1, 1, 0, 0], [0, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]]


def test_report_bad_input() -> None:
    with pytest.raises(InputError, match="one prediction per sample"):
        classification_report([0, 1], [0], NAMES)
    with pytest.raises(InputError, match="class_names"):
        classification_report([0, 4], [0, 1], NAMES)
    with pytest.raises(InputError, match="empty"):
        classification_report([], [], NAMES)
    with pytest.raises(InputError, match="integer"):
        classification_report([0.5, 1.0], [0, 1], NAMES)


def test_summarize_repeats() -> None:
    runs = [
        classification_report(*_random(s), NAMES) | {"nearest_center_accuracy": v}
        for s, v in zip(range(3), (0.9, 0.8, 0.7))
    ]
    summary = summarize_repeats(runs)
    accs = [r["accuracy"] for r in runs]
    mean = sum(accs) / 3
    std = math.sqrt(sum((a - mean) ** 2 for a in accs) / 2)
    assert summary["accuracy"] == pytest.approx((mean, std))
    assert summary["nearest_center_accuracy"] == pytest.approx((0.8, 0.1))
    assert "per_class_accuracy/beach" in summary
    assert "confusion_matrix" not in summary and "class_names" not in summary
    assert summarize_repeats([{"accuracy": 0.5}]) == {"accuracy": (0.5, 0.0)}
    with pytest.raises(DataError):
        summarize_repeats([])
    with pytest.raises(DataError, match="NaN"):
        summarize_repeats([{"accuracy": 0.5}, {"accuracy": float("nan")}])
