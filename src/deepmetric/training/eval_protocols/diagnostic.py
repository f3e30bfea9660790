"""Lesion diagnosis (``eval.protocol: diagnostic``): melanoma / malignant detection metrics.

The scores are the softmax probabilities of the loss's trained classifier
(:func:`~deepmetric.losses.contracts.find_classifier`; ``loss.name=triplet_hybrid``, or any loss
with ``loss.ce_weight > 0``; without one, a one-line :class:`~deepmetric.errors.ConfigError`),
placed in the dataset's label space like the classification protocol does
(:func:`~deepmetric.training.eval_protocols.classification.class_space`: the evaluated classes
must be training classes). The positive class is ``eval.positive_class``, else ``melanoma``,
else ``malignant``.

Metrics (:func:`deepmetric.evaluation.medical.diagnostic_metrics`), plus the split's retrieval
metrics:

* multi-class, unprefixed: ``accuracy``, ``balanced_accuracy`` and, for the positive class one
  against the rest, ``sensitivity``, ``specificity``, ``auc``, ``average_precision``; every
  class's one-vs-rest values as ``<class>/<metric>`` and their means as ``macro/<metric>``;
* binary, prefixed ``binary/``: positive class vs the rest, scores ``[1 - p, p]`` (threshold 0.5
  on the positive probability): ``binary/accuracy``, ``binary/balanced_accuracy``,
  ``binary/sensitivity``, ``binary/specificity``, ``binary/auc``, ``binary/average_precision``.

A value that is undefined on the split (e.g. the AUC of a class without test items) is NaN in
Python and ``null`` in ``metrics.json``.

``write_artifacts`` writes ``test_predictions.npz`` (``labels``, ``predictions`` = argmax,
``probabilities`` N x C over the class names, ``class_names``), ``figures/roc.png`` and, with
``eval.heatmaps`` > 0 and image inputs, ``figures/heatmaps.png`` (Grad-CAM of the predicted class,
:mod:`deepmetric.evaluation.diagnostic_figures`), each with a caption ``figures/<name>.txt``
shown by the run report.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from deepmetric.config import EvalConfig
from deepmetric.errors import ConfigError
from deepmetric.evaluation.medical import diagnostic_metrics
from deepmetric.losses.contracts import ClassifierLoss, find_classifier
from deepmetric.training.checkpoint import save_npz
from deepmetric.training.eval_protocols.base import EvalInputs
from deepmetric.training.eval_protocols.classification import PREDICTIONS_FILE, ClassSpace, class_space, eval_mode
from deepmetric.training.evaluate import metrics_of

__all__ = ["BINARY_KEYS", "POSITIVE_NAMES", "DiagnosticProtocol", "positive_index"]

#: names of the positive class, in order of preference, when eval.positive_class is null
POSITIVE_NAMES = ("melanoma", "malignant")

#: keys of the positive-vs-rest view kept under ``binary/``
BINARY_KEYS = ("accuracy", "balanced_accuracy", "sensitivity", "specificity", "auc", "average_precision")

FIGURES_DIR = "figures"


def positive_index(class_names: list[str], positive_class: str | None) -> int:
    """Index of the positive class in ``class_names``; raises :class:`ConfigError` when absent."""
    if positive_class is not None:
        if positive_class not in class_names:
            raise ConfigError(
                f"eval.positive_class '{positive_class}' is not a class of the data ({', '.join(class_names)}); "
                "set it to one of them"
            )
        return class_names.index(positive_class)
    for name in POSITIVE_NAMES:
        if name in class_names:
            return class_names.index(name)
    raise ConfigError(
        f"eval.protocol=diagnostic found no positive class among {', '.join(class_names)} (looked for "
        f"{' or '.join(POSITIVE_NAMES)}); set eval.positive_class to one of the classes"
    )


def _classifier(inputs: EvalInputs) -> ClassifierLoss:
    classifier = find_classifier(inputs.loss)
    if classifier is None:
        raise ConfigError(
            f"eval.protocol=diagnostic needs a trained classifier, but loss {type(inputs.loss).__name__} has none; "
            "use loss.name=triplet_hybrid or add one with loss.ce_weight=1"
        )
    return classifier


class DiagnosticProtocol:
    """Diagnostic metrics of the classifier's probabilities (see the module docstring)."""

    name = "diagnostic"

    def __init__(self, config: EvalConfig) -> None:
        self.config = config

    def probabilities(self, inputs: EvalInputs) -> tuple[np.ndarray, np.ndarray, ClassSpace]:
        """(labels (N,), probabilities (N, C) over the class names, class space) of the split."""
        embeddings, labels = inputs.embeddings()
        space = class_space(inputs, labels, self.name)
        classifier = _classifier(inputs)
        with eval_mode(inputs.loss):
            logits = classifier.logits(embeddings.to(inputs.device)).float()
        if logits.shape[1] != len(space.train_classes):
            raise ConfigError(
                f"the classifier scores {logits.shape[1]} classes but training has {len(space.train_classes)}; "
                "the loss was built for another dataset: train a new run (check model.init_from)"
            )
        trained = torch.softmax(logits, dim=1).cpu().numpy().astype(np.float64)
        probs = np.zeros((len(labels), len(space.class_names)), dtype=np.float64)
        probs[:, space.train_classes] = trained
        return labels.numpy().astype(np.int64), probs, space

    def evaluate(self, inputs: EvalInputs) -> dict[str, float]:
        y, probs, space = self.probabilities(inputs)
        m = positive_index(space.class_names, self.config.positive_class)
        embeddings, labels = inputs.embeddings()
        metrics = metrics_of(embeddings, labels, self.config, getattr(inputs.dataset, "is_query", None))
        metrics.update(diagnostic_metrics(y, probs, space.class_names, positive_class=m))
        binary = diagnostic_metrics((y == m).astype(np.int64), np.stack([1.0 - probs[:, m], probs[:, m]], axis=1),
                                    ["rest", space.class_names[m]])
        metrics.update({f"binary/{key}": binary[key] for key in BINARY_KEYS})
        return metrics

    def write_artifacts(self, inputs: EvalInputs, run_dir: Path) -> None:
        """``test_predictions.npz``, ``figures/roc.png`` and ``figures/heatmaps.png`` with captions."""
        from deepmetric.evaluation.diagnostic_figures import plot_roc

        run_dir = Path(run_dir)
        y, probs, space = self.probabilities(inputs)
        names = space.class_names
        m = positive_index(names, self.config.positive_class)
        save_npz(run_dir / PREDICTIONS_FILE, labels=y, predictions=probs.argmax(axis=1).astype(np.int64),
                 probabilities=probs, class_names=np.asarray(names, dtype=str))
        figures = run_dir / FIGURES_DIR
        plot_roc(y, probs, names, figures / "roc.png")
        (figures / "roc.txt").write_text(
            f"One-vs-rest ROC curve of every class of the test split ({len(y)} items), from the softmax probabilities "
            f"of the trained classifier; AUC in the legend. Positive class: {names[m]}.\n", encoding="utf-8")
        if self.config.heatmaps > 0:
            self._heatmaps(inputs, space, figures)

    def _heatmaps(self, inputs: EvalInputs, space: ClassSpace, figures: Path) -> None:
        from deepmetric.evaluation.diagnostic_figures import heatmap_rows, plot_heatmaps

        first = inputs.dataset[0][0] if len(inputs.dataset) else None
        if not isinstance(first, Tensor) or first.ndim != 3:
            warnings.warn(f"eval.heatmaps={self.config.heatmaps} but the test items are not images (C x H x W "
                          "tensors), so no Grad-CAM figure was made; set eval.heatmaps=0", stacklevel=2)
            return
        classifier = _classifier(inputs)

        def scores(embedding: Tensor) -> Tensor:
            return classifier.logits(embedding)

        try:
            with eval_mode(inputs.loss), torch.enable_grad():
                rows = heatmap_rows(inputs.model, scores, inputs.dataset, self.config.heatmaps, inputs.device,
                                    class_index=space.train_classes.tolist())
        finally:
            inputs.loss.zero_grad(set_to_none=True)  # Grad-CAM's backward also reached the classifier
        if not rows:
            warnings.warn(f"eval.heatmaps={self.config.heatmaps} but model {type(inputs.model).__name__} has no "
                          "convolution to explain with Grad-CAM; set eval.heatmaps=0", stacklevel=2)
            return
        plot_heatmaps(rows, space.class_names, figures / "heatmaps.png")
        attention = any(r["attention"] is not None for r in rows)
        (figures / "heatmaps.txt").write_text(
            f"{len(rows)} test images, classes in turn: the image, its Grad-CAM map for the predicted class on the "
            "last backbone stage" + (" and the last spatial attention map" if attention else "")
            + "; titles give the true class and the predicted class with its probability.\n", encoding="utf-8")
