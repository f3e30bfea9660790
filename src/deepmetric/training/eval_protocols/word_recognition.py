"""Word recognition (``eval.protocol: word_recognition``): which word was spoken, closed set.

Every evaluated utterance gets a word from the *support*, the training items embedded under the
evaluation transform (:meth:`EvalInputs.support_embeddings`), in three ways:

* ``word_accuracy/prototype`` -- the nearest (cosine) word prototype, the re-normalised mean of
  the support embeddings of each word
  (:func:`deepmetric.evaluation.word_recognition.prototype_predict`);
* ``word_accuracy/knn`` -- the word of the single most similar support embedding (1-NN);
* ``word_accuracy/softmax`` -- only when the loss has a trained classifier
  (:func:`deepmetric.losses.contracts.find_classifier`): the argmax of its logits.

``word_accuracy`` is the headline (select it with ``eval.select_metric: word_accuracy``). The
rule: it is ``word_accuracy/softmax`` when the loss *is* a trained classifier that wraps no other
loss (``normalized_softmax``; also a proxy loss such as ``proxy_anchor``, whose "logits" are the
proxy similarities), because then the classifier is the whole training signal; otherwise (any
pair/triplet loss, and a metric loss with an added cross-entropy term, ``loss.ce_weight > 0``)
it is ``word_accuracy/prototype``. Every value is in [0, 1]. The retrieval metrics of the split
(:func:`deepmetric.training.evaluate.metrics_of`) are included too.

Labels: support and evaluated items carry the dataset's word indices. The classifier is indexed
by the *remapped* training labels: the trainer numbers the training split's words 0..C-1 in
sorted word-index order (``splits.train.label_map``), and the support holds the same items, so
classifier output ``c`` is the ``c``-th smallest word index of the support. A classifier whose
width differs from the number of support words is an error, as is an evaluated word that never
occurs in the support (the task is closed-set; e.g. a validation split carved by whole classes).

``write_artifacts`` writes ``test_predictions.npz``: ``labels`` and ``predictions`` (the headline
method's, word indices) and ``class_names`` (the words in index order), from which the run
report draws a confusion matrix with word names.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from deepmetric.config import EvalConfig
from deepmetric.errors import ConfigError, DataError
from deepmetric.evaluation.word_recognition import knn_predict, prototype_predict
from deepmetric.losses.contracts import LossWrapper, find_classifier
from deepmetric.training.checkpoint import save_npz
from deepmetric.training.eval_protocols.base import EvalInputs
from deepmetric.training.evaluate import metrics_of

__all__ = ["PREDICTIONS_FILE", "WordRecognitionProtocol", "headline_method", "word_predictions"]

#: file of the test predictions, read by the run report (confusion matrix)
PREDICTIONS_FILE = "test_predictions.npz"


def headline_method(loss: nn.Module) -> str:
    """``"softmax"`` when ``loss`` itself is a trained classifier wrapping no other loss, else
    ``"prototype"`` (see the module docstring)."""
    classifier = find_classifier(loss)
    if classifier is loss and not isinstance(loss, LossWrapper):
        return "softmax"
    return "prototype"


def _words(labels: Tensor, names: list[str] | None) -> list[str]:
    return [names[i] if names is not None and 0 <= i < len(names) else str(i) for i in labels.tolist()]


def _check_closed_set(labels: Tensor, support_labels: Tensor, names: list[str] | None) -> None:
    unseen = sorted(set(labels.tolist()) - set(support_labels.tolist()))
    if unseen:
        raise DataError(
            f"word recognition is closed-set, but word(s) {_words(torch.tensor(unseen), names)[:5]} of the evaluated "
            "split never occur in the training split; set data.val_by=items (not classes) or use eval.protocol=retrieval"
        )


@torch.no_grad()
def _softmax_predict(classifier: nn.Module, embeddings: Tensor, support_labels: Tensor, device: torch.device) -> Tensor:
    """Word indices predicted by ``classifier``: its argmax mapped back through the training remap."""
    words = torch.unique(support_labels)  # sorted: classifier output c is words[c]
    first = next(iter(classifier.parameters()), None)  # type: ignore[attr-defined]
    where = first.device if first is not None else device
    logits = classifier.logits(embeddings.to(where)).float().cpu()  # type: ignore[attr-defined]
    if logits.dim() != 2 or logits.shape[1] != len(words):
        raise DataError(
            f"the loss's classifier scores {logits.shape[-1]} classes but the training split has {len(words)} words, "
            "so its outputs cannot be mapped to words; train and evaluate with the same data.params"
        )
    return words[logits.argmax(dim=1)]


def word_predictions(inputs: EvalInputs) -> dict[str, Tensor]:
    """``{"prototype": ..., "knn": ..., ["softmax": ...]}``: predicted word indices of every item
    of ``inputs.dataset``."""
    support = inputs.support_embeddings()
    if support is None:
        raise ConfigError(
            "eval.protocol=word_recognition needs the training items as support, but the trainer passed none; "
            "evaluate through deepmetric.training.fit"
        )
    support_emb, support_labels = support
    embeddings, labels = inputs.embeddings()
    _check_closed_set(labels, support_labels, inputs.class_names)
    out = {
        "prototype": prototype_predict(support_emb, support_labels, embeddings),
        "knn": knn_predict(support_emb, support_labels, embeddings, k=1),
    }
    classifier = find_classifier(inputs.loss)
    if classifier is not None:
        out["softmax"] = _softmax_predict(classifier, embeddings, support_labels, inputs.device)  # type: ignore[arg-type]
    return out


class WordRecognitionProtocol:
    """Word accuracy by prototypes, 1-NN and (when trained) the classifier; see the module docstring."""

    def __init__(self, config: EvalConfig) -> None:
        self.config = config

    def evaluate(self, inputs: EvalInputs) -> dict[str, float]:
        embeddings, labels = inputs.embeddings()
        metrics = metrics_of(embeddings, labels, self.config, getattr(inputs.dataset, "is_query", None))
        for method, predicted in word_predictions(inputs).items():
            metrics[f"word_accuracy/{method}"] = float((predicted == labels).double().mean())
        metrics["word_accuracy"] = metrics[f"word_accuracy/{headline_method(inputs.loss)}"]
        return metrics

    def write_artifacts(self, inputs: EvalInputs, run_dir: Path) -> None:
        """``test_predictions.npz`` of the headline method, with the words as class names."""
        _, labels = inputs.embeddings()
        predicted = word_predictions(inputs)[headline_method(inputs.loss)]
        arrays: dict[str, np.ndarray] = {"labels": labels.numpy().astype(np.int64),
                                         "predictions": predicted.numpy().astype(np.int64)}
        if inputs.class_names is not None:
            arrays["class_names"] = np.asarray([str(n) for n in inputs.class_names], dtype=str)
        save_npz(Path(run_dir) / PREDICTIONS_FILE, **arrays)
