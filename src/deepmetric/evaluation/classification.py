"""Classification metrics (scene classification, skin lesions) and repeated-split summaries.

* :func:`classification_report` -- overall accuracy, per-class accuracy (recall of each class),
  their mean, and the confusion matrix (rows = true class, columns = predicted class).
* :func:`summarize_repeats` -- ``{metric: (mean, std)}`` over repeated random splits, as
  remote-sensing papers report accuracy ("mean +- std over N splits").

Inputs may be Python sequences, NumPy arrays or torch tensors of integer class indices.
Everything returned is plain Python (floats, lists, dicts), so it serialises to JSON as is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from deepmetric.errors import DataError, InputError


def _as_index_array(values: Any, name: str) -> np.ndarray:
    if hasattr(values, "detach"):  # torch tensor
        values = values.detach().cpu().numpy()
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise InputError(f"{name} must be 1-D (one class index per sample), got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise InputError(
                f"{name} must hold integer class indices, got dtype {arr.dtype}; map class names "
                "to indices 0..C-1 (the order of class_names) first"
            )
    return arr.astype(np.int64)


def confusion_matrix(y_true: Any, y_pred: Any, num_classes: int) -> list[list[int]]:
    """C x C counts: entry [t][p] = number of samples of true class t predicted as p."""
    t = _as_index_array(y_true, "y_true")
    p = _as_index_array(y_pred, "y_pred")
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (t, p), 1)
    return cm.tolist()


def classification_report(y_true: Any, y_pred: Any, class_names: Sequence[str]) -> dict[str, Any]:
    """Accuracy, per-class accuracy and confusion matrix of predicted vs true class indices.

    Args:
        y_true, y_pred: N class indices in ``0 .. len(class_names) - 1``.
        class_names: the name of every class index, in index order.

    Returns:
        ``{"accuracy": float, "mean_per_class_accuracy": float,
        "per_class_accuracy": {name: float | None}, "support": {name: int},
        "confusion_matrix": [[int]] (rows true, columns predicted), "class_names": [str],
        "num_samples": int}``. A class with no true samples has per-class accuracy ``None``
        (not NaN) and is left out of the mean.

    Raises:
        InputError: different lengths, an empty set, or an index outside the class range.
    """
    names = [str(n) for n in class_names]
    if not names:
        raise InputError("class_names is empty; pass the name of every class index")
    if len(set(names)) != len(names):
        raise InputError(f"class_names has duplicates: {names}; give each class a unique name")
    t = _as_index_array(y_true, "y_true")
    p = _as_index_array(y_pred, "y_pred")
    if t.shape != p.shape:
        raise InputError(
            f"y_true has {t.size} entries but y_pred has {p.size}; pass one prediction per sample"
        )
    if t.size == 0:
        raise InputError("y_true is empty; evaluate on at least one sample")
    c = len(names)
    for arr, name in ((t, "y_true"), (p, "y_pred")):
        if arr.min() < 0 or arr.max() >= c:
            raise InputError(
                f"{name} holds class indices in [{arr.min()}, {arr.max()}] but there are {c} "
                f"class_names (valid indices 0..{c - 1}); pass the full class_names list"
            )
    cm = np.zeros((c, c), dtype=np.int64)
    np.add.at(cm, (t, p), 1)
    support = cm.sum(axis=1)
    per_class: dict[str, float | None] = {}
    for k, name in enumerate(names):
        per_class[name] = float(cm[k, k] / support[k]) if support[k] > 0 else None
    present = [v for v in per_class.values() if v is not None]
    return {
        "accuracy": float(np.trace(cm) / t.size),
        "mean_per_class_accuracy": float(np.mean(present)),
        "per_class_accuracy": per_class,
        "support": {name: int(s) for name, s in zip(names, support)},
        "confusion_matrix": cm.tolist(),
        "class_names": names,
        "num_samples": int(t.size),
    }


def _flatten_scalars(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten_scalars(value, prefix=f"{name}/"))
        elif isinstance(value, bool) or value is None:
            continue
        elif isinstance(value, (int, float, np.integer, np.floating)):
            out[name] = float(value)
    return out


def summarize_repeats(runs: Sequence[Mapping[str, Any]]) -> dict[str, tuple[float, float]]:
    """``{metric: (mean, std)}`` over repeated runs (e.g. random train/test splits).

    Every numeric scalar is summarised; nested dicts are flattened with ``/`` (so a report's
    ``per_class_accuracy`` gives ``"per_class_accuracy/<class>"``); lists (confusion matrices),
    strings, booleans and ``None`` values are skipped. ``std`` is the sample standard deviation
    (ddof = 1) over the runs that have the metric, and 0.0 for a single run. A metric missing from some
    runs (e.g. a class absent from one test split) is summarised over the runs that have it.

    Raises:
        DataError: no runs, or no numeric metric in any run.
    """
    if len(runs) == 0:
        raise DataError("summarize_repeats got no runs; pass one metrics dict per repeat")
    flat = [_flatten_scalars(r) for r in runs]
    keys: list[str] = []
    for f in flat:
        keys.extend(k for k in f if k not in keys)
    if not keys:
        raise DataError("summarize_repeats found no numeric metric in the runs; pass metric dicts")
    out: dict[str, tuple[float, float]] = {}
    for key in keys:
        values = np.array([f[key] for f in flat if key in f], dtype=np.float64)
        if not np.all(np.isfinite(values)):
            raise DataError(f"metric '{key}' is NaN or infinite in some run; fix that run first")
        std = float(values.std(ddof=1)) if values.size > 1 else 0.0
        out[key] = (float(values.mean()), std if math.isfinite(std) else 0.0)
    return out
