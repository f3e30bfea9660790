"""Closed-set classification (``eval.protocol: classification``): accuracy of every head.

Heads, each reported when available (the ``heads`` of :func:`head_predictions`):

* ``softmax`` -- argmax of the trained classifier of the loss
  (:func:`~deepmetric.losses.contracts.find_classifier`: center-structured loss with its CE
  term on, ``loss.ce_weight > 0``, normalized softmax, triplet_hybrid, ...);
* ``nearest_center`` -- the nearest trained class center of the loss
  (:func:`~deepmetric.losses.contracts.find_centers`);
* ``knn`` -- majority vote of the ``k = eval.k_values[0]`` nearest *support* embeddings (the
  training items under the evaluation transform; ``eval.metric`` similarity; a tie goes to the
  tied class met first): always available.

Metrics: ``accuracy/<head>``, ``mean_per_class_accuracy/<head>`` and
``per_class_accuracy/<head>/<class name>`` (classes present in the split) of
:func:`~deepmetric.evaluation.classification.classification_report`; ``accuracy`` and
``mean_per_class_accuracy`` of the main head, the first available of softmax, nearest_center,
knn (so ``eval.select_metric: accuracy`` works with any loss); plus the retrieval metrics of the
split.

Labels (:class:`ClassSpace`). The classifier and the centers are indexed by the training labels
remapped to ``0 .. C-1`` in sorted order (the training split's ``label_map``), which are the
sorted labels of the support split; a head's index ``n`` is the dataset label
``train_classes[n]``. The evaluated split must share the dataset's label space: every evaluated
label is a training class, and where both splits name their classes the names agree. Anything
else (a zero-shot, class-disjoint split, or validation carved from whole classes) is a one-line
:class:`~deepmetric.errors.ConfigError`: classification of classes never trained is meaningless.

``write_artifacts`` writes ``test_predictions.npz``: ``labels``, ``predictions`` (main head),
``class_names`` and ``predictions_<head>`` for every head (read by the run report's confusion
matrix); the metrics themselves are in ``metrics.json``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from deepmetric.config import EvalConfig
from deepmetric.errors import ConfigError
from deepmetric.evaluation.classification import classification_report
from deepmetric.losses.contracts import find_centers, find_classifier
from deepmetric.training.checkpoint import save_npz
from deepmetric.training.embed import class_names_of
from deepmetric.training.eval_protocols.base import EvalInputs
from deepmetric.training.evaluate import metrics_of
from deepmetric.training.views import dataset_labels

__all__ = ["HEADS", "PREDICTIONS_FILE", "ClassSpace", "ClassificationProtocol", "class_space", "head_predictions"]

#: prediction heads, in order of preference for the main head
HEADS = ("softmax", "nearest_center", "knn")

#: test predictions of the run (read by the run report)
PREDICTIONS_FILE = "test_predictions.npz"


@dataclass(frozen=True)
class ClassSpace:
    """How a trained head's class index maps onto the evaluated split's labels."""

    #: dataset label of classifier / center index n (the sorted training labels)
    train_classes: np.ndarray
    #: the name of every dataset label (index = label)
    class_names: list[str]

    def labels_of(self, indices: Tensor) -> np.ndarray:
        """Dataset labels of head indices (N,)."""
        return self.train_classes[indices.detach().cpu().numpy().astype(np.int64)]


def _zero_shot_error(protocol: str, detail: str) -> ConfigError:
    return ConfigError(
        f"eval.protocol={protocol} needs the same classes in training and evaluation, but {detail} (a "
        "zero-shot, class-disjoint split); set data.val_by=items and split every class between train and "
        "test (e.g. data.params.split_by=items, scene_folder, or protocol.name=kfold / repeated_splits)"
    )


def class_space(inputs: EvalInputs, labels: Tensor, protocol: str) -> ClassSpace:
    """The :class:`ClassSpace` of ``inputs`` (see the module docstring); raises
    :class:`ConfigError` when the evaluated classes are not the training classes."""
    if inputs.support is None:
        raise ConfigError(
            f"eval.protocol={protocol} needs the training items (EvalInputs.support) to know the trained "
            "classes; evaluate through deepmetric.training.fit"
        )
    support = inputs.support()
    train_classes = sorted(set(dataset_labels(support)))
    evaluated = sorted(set(int(y) for y in labels.tolist()))
    train_names = class_names_of(support)
    eval_names = inputs.class_names if inputs.class_names is not None else class_names_of(inputs.dataset)

    def name(names: list[str] | None, c: int) -> str:
        return names[c] if names is not None and 0 <= c < len(names) else str(c)

    unseen = [c for c in evaluated if c not in set(train_classes)]
    if unseen:
        raise _zero_shot_error(protocol, f"{len(unseen)} evaluated class(es) (e.g. '{name(eval_names, unseen[0])}') "
                                         f"are not among the {len(train_classes)} training classes")
    if train_names is not None and eval_names is not None:
        for c in sorted(set(train_classes) | set(evaluated)):
            if c >= len(train_names) or c >= len(eval_names) or train_names[c] != eval_names[c]:
                raise _zero_shot_error(protocol, f"label {c} is '{name(train_names, c)}' in training and "
                                                 f"'{name(eval_names, c)}' in the evaluated split")
    if eval_names is not None and train_classes[-1] >= len(eval_names):
        raise _zero_shot_error(protocol, f"training label {train_classes[-1]} has no name among the evaluated split's "
                                         f"{len(eval_names)} classes")
    names = eval_names or train_names or [str(c) for c in range(max([*train_classes, *evaluated]) + 1)]
    return ClassSpace(np.asarray(train_classes, dtype=np.int64), list(names))


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """``module`` in eval mode and without gradients inside the block; its mode is restored after."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        module.train(was_training)


def _check_outputs(head: str, scores: Tensor, space: ClassSpace) -> None:
    if scores.ndim == 2 and scores.shape[1] != len(space.train_classes):
        raise ConfigError(
            f"the {head} head scores {scores.shape[1]} classes but training has {len(space.train_classes)}; "
            "the loss was built for another dataset: train a new run (check model.init_from)"
        )


def knn_labels(queries: Tensor, support: Tensor, support_labels: Tensor, config: EvalConfig) -> np.ndarray:
    """k-NN vote (``k = eval.k_values[0]``, at most the support size) of every query."""
    from deepmetric.evaluation.knn import knn_search
    from deepmetric.evaluation.metrics import knn_vote

    k = max(1, min(int(config.k_values[0]) if config.k_values else 1, int(support.shape[0])))
    found = knn_search(queries, support, k, metric=config.metric, backend=config.backend)
    neighbours = support_labels.long()[torch.as_tensor(found.indices).long().cpu()]
    return knn_vote(neighbours).numpy().astype(np.int64)


def head_predictions(inputs: EvalInputs, space: ClassSpace) -> dict[str, np.ndarray]:
    """``{head: predicted dataset label per item}`` of every available head, in :data:`HEADS` order."""
    embeddings, _ = inputs.embeddings()
    predictions: dict[str, np.ndarray] = {}
    classifier = find_classifier(inputs.loss)
    centers = find_centers(inputs.loss)
    with eval_mode(inputs.loss):
        on_device = embeddings.to(inputs.device)
        if classifier is not None:
            logits = classifier.logits(on_device)
            _check_outputs("softmax", logits, space)
            predictions["softmax"] = space.labels_of(logits.argmax(dim=1))
        if centers is not None:
            predictions["nearest_center"] = space.labels_of(centers.predict_nearest_center(on_device))
    support = inputs.support_embeddings()
    assert support is not None  # class_space has checked that there is a support split
    predictions["knn"] = knn_labels(embeddings, support[0], support[1], inputs.config)
    return predictions


class ClassificationProtocol:
    """Accuracy of the softmax, nearest-center and k-NN heads (see the module docstring)."""

    name = "classification"

    def __init__(self, config: EvalConfig) -> None:
        self.config = config

    def _predict(self, inputs: EvalInputs) -> tuple[np.ndarray, ClassSpace, dict[str, np.ndarray]]:
        _, labels = inputs.embeddings()
        space = class_space(inputs, labels, self.name)
        return labels.numpy().astype(np.int64), space, head_predictions(inputs, space)

    def evaluate(self, inputs: EvalInputs) -> dict[str, float]:
        y, space, predictions = self._predict(inputs)
        embeddings, labels = inputs.embeddings()
        metrics = metrics_of(embeddings, labels, self.config, getattr(inputs.dataset, "is_query", None))
        for head, predicted in predictions.items():
            report = classification_report(y, predicted, space.class_names)
            metrics[f"accuracy/{head}"] = report["accuracy"]
            metrics[f"mean_per_class_accuracy/{head}"] = report["mean_per_class_accuracy"]
            for class_name, value in report["per_class_accuracy"].items():
                if value is not None:
                    metrics[f"per_class_accuracy/{head}/{class_name}"] = value
        main = next(h for h in HEADS if h in predictions)
        metrics["accuracy"] = metrics[f"accuracy/{main}"]
        metrics["mean_per_class_accuracy"] = metrics[f"mean_per_class_accuracy/{main}"]
        return metrics

    def write_artifacts(self, inputs: EvalInputs, run_dir: Path) -> None:
        """``test_predictions.npz`` (see the module docstring)."""
        y, space, predictions = self._predict(inputs)
        main = next(h for h in HEADS if h in predictions)
        save_npz(
            Path(run_dir) / PREDICTIONS_FILE,
            labels=y,
            predictions=predictions[main],
            class_names=np.asarray(space.class_names, dtype=str),
            **{f"predictions_{head}": p for head, p in predictions.items()},
        )
