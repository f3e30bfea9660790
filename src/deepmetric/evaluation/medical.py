"""Diagnostic metrics for lesion classification (ISIC challenge conventions).

Binary (``positive_class`` = the malignant class): accuracy, balanced accuracy, sensitivity
(recall of the positive class), specificity (recall of the negative class), ROC AUC and average
precision of the positive class's score. Multi-class: accuracy, balanced accuracy (mean
per-class recall) and, one class against the rest for every class, sensitivity, specificity,
AUC and average precision, plus their macro means. Scores are class probabilities
``(N, C)``; predictions are their argmax.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from deepmetric.errors import InputError


def _one_vs_rest(y_true: np.ndarray, y_pred: np.ndarray, scores: np.ndarray, c: int) -> dict[str, float]:
    positive, predicted = y_true == c, y_pred == c
    tp, fn = np.sum(positive & predicted), np.sum(positive & ~predicted)
    tn, fp = np.sum(~positive & ~predicted), np.sum(~positive & predicted)
    both = positive.any() and (~positive).any()
    return {
        "sensitivity": float(tp / (tp + fn)) if tp + fn else float("nan"),
        "specificity": float(tn / (tn + fp)) if tn + fp else float("nan"),
        "auc": float(roc_auc_score(positive, scores[:, c])) if both else float("nan"),
        "average_precision": float(average_precision_score(positive, scores[:, c])) if both else float("nan"),
    }


def diagnostic_metrics(
    y_true: Sequence[int] | np.ndarray,
    scores: np.ndarray,
    class_names: Sequence[str] | None = None,
    positive_class: int | None = None,
) -> dict[str, float]:
    """Metrics from labels ``(N,)`` and class probabilities ``(N, C)``.

    With two classes (or ``positive_class`` given) the binary keys ``sensitivity``,
    ``specificity``, ``auc`` and ``average_precision`` refer to ``positive_class`` (default 1);
    per-class one-vs-rest values are always added as ``"<name>/<metric>"`` with macro means
    ``"macro/<metric>"``.
    """
    y = np.asarray(y_true).astype(int)
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] != len(y):
        raise InputError(f"scores must be (N, C) with N = {len(y)} labels, got shape {s.shape}")
    if len(y) == 0:
        raise InputError("no samples to evaluate: the split is empty")
    if not np.isfinite(s).all():
        raise InputError("scores contain NaN or inf; check the model outputs")
    n_classes = s.shape[1]
    names = list(class_names) if class_names is not None else [str(c) for c in range(n_classes)]
    pred = s.argmax(axis=1)
    recalls = [np.mean(pred[y == c] == c) for c in range(n_classes) if np.any(y == c)]
    out = {"accuracy": float(np.mean(pred == y)), "balanced_accuracy": float(np.mean(recalls))}
    per_class = {c: _one_vs_rest(y, pred, s, c) for c in range(n_classes)}
    for c, values in per_class.items():
        out.update({f"{names[c]}/{k}": v for k, v in values.items()})
    for k in ("sensitivity", "specificity", "auc", "average_precision"):
        out[f"macro/{k}"] = float(np.nanmean([per_class[c][k] for c in per_class]))
    if n_classes == 2 or positive_class is not None:
        out.update(per_class[1 if positive_class is None else positive_class])
    return out


def roc_curves(y_true: Sequence[int] | np.ndarray, scores: np.ndarray) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """One-vs-rest ROC curve ``(false positive rate, true positive rate)`` for every class that
    has both positive and negative samples."""
    y = np.asarray(y_true).astype(int)
    s = np.asarray(scores, dtype=np.float64)
    curves = {}
    for c in range(s.shape[1]):
        positive = y == c
        if positive.any() and (~positive).any():
            fpr, tpr, _ = roc_curve(positive, s[:, c])
            curves[c] = (fpr, tpr)
    return curves
