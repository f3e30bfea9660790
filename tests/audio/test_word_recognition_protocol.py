"""eval.protocol=word_recognition: prototype, 1-NN and softmax word accuracy against explicit loops,
the headline rule, the training-label remap of the classifier, closed-set errors and the
predictions file the report reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepmetric.config import EvalConfig
from deepmetric.errors import DataError
from deepmetric.evaluation.report import confusion_matrix
from deepmetric.losses import build_loss
from deepmetric.losses.classification import Hybrid
from deepmetric.training.eval_protocols import EVAL_PROTOCOLS, EvalInputs, build_eval_protocol
from deepmetric.training.eval_protocols.word_recognition import PREDICTIONS_FILE, WordRecognitionProtocol, headline_method

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven"]


class Items(torch.utils.data.Dataset):
    """Precomputed embeddings as a dataset: item i is (x_i, label_i)."""

    def __init__(self, x: Tensor, labels: list[int]) -> None:
        self.x, self.labels, self.class_names = x, labels, WORDS

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.x[i], self.labels[i]


def data(seed: int = 0) -> tuple[Items, Items]:
    """Support and queries of words 2, 5, 7 (dataset indices; the training remap is 0, 1, 2)."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(8, 6, generator=g)
    support_labels = [2, 2, 2, 5, 5, 7, 7, 7, 7]
    query_labels = [2, 5, 7] * 6
    support = centers[support_labels] + 0.6 * torch.randn(len(support_labels), 6, generator=g)
    queries = centers[query_labels] + 0.9 * torch.randn(len(query_labels), 6, generator=g)
    return Items(support, support_labels), Items(queries, query_labels)


def inputs(loss: nn.Module, seed: int = 0) -> EvalInputs:
    support, queries = data(seed)
    return EvalInputs(model=nn.Identity(), loss=loss, dataset=queries, config=EvalConfig(protocol="word_recognition"),
                      device=torch.device("cpu"), support=lambda: support, class_names=WORDS)


def explicit_prototype(support: Items, queries: Items) -> list[int]:
    predictions = []
    for q in queries.x:
        best, best_sim = -1, -2.0
        for word in sorted(set(support.labels)):
            rows = [F.normalize(support.x[i], dim=0) for i in range(len(support)) if support.labels[i] == word]
            proto = F.normalize(torch.stack(rows).mean(dim=0), dim=0)
            sim = float(F.normalize(q, dim=0) @ proto)
            if sim > best_sim:
                best, best_sim = word, sim
        predictions.append(best)
    return predictions


def explicit_nearest(support: Items, queries: Items) -> list[int]:
    predictions = []
    for q in queries.x:
        sims = [float(F.normalize(q, dim=0) @ F.normalize(s, dim=0)) for s in support.x]
        predictions.append(support.labels[int(np.argmax(sims))])
    return predictions


def accuracy(predicted: list[int], labels: list[int]) -> float:
    return sum(p == y for p, y in zip(predicted, labels)) / len(labels)


def test_registered_and_built_from_the_eval_config() -> None:
    assert EVAL_PROTOCOLS.resolve("word_recognition") is WordRecognitionProtocol
    assert isinstance(build_eval_protocol(EvalConfig(protocol="word_recognition")), WordRecognitionProtocol)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metric_loss_prototype_and_knn_match_explicit_loops(seed: int) -> None:
    support, queries = data(seed)
    metrics = WordRecognitionProtocol(EvalConfig()).evaluate(inputs(build_loss("triplet"), seed))
    assert metrics["word_accuracy/prototype"] == pytest.approx(accuracy(explicit_prototype(support, queries), queries.labels))
    assert metrics["word_accuracy/knn"] == pytest.approx(accuracy(explicit_nearest(support, queries), queries.labels))
    assert "word_accuracy/softmax" not in metrics  # a triplet loss has no classifier
    assert metrics["word_accuracy"] == metrics["word_accuracy/prototype"]
    assert "map@r" in metrics and "recall@1" in metrics  # the retrieval metrics come along


class FixedClassifier(nn.Module):
    """A 'pure classifier' loss whose logits are x @ W.T (classes = remapped training labels 0..C-1)."""

    def __init__(self, weight: Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)

    def logits(self, embeddings: Tensor) -> Tensor:
        return embeddings @ self.weight.T

    def classifier_trained(self) -> bool:
        return True

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:  # pragma: no cover - not trained here
        return F.cross_entropy(self.logits(embeddings), labels)


def test_softmax_maps_classifier_outputs_back_to_word_indices() -> None:
    support, queries = data(3)
    weight = torch.randn(3, 6, generator=torch.Generator().manual_seed(5))
    metrics = WordRecognitionProtocol(EvalConfig()).evaluate(inputs(FixedClassifier(weight), 3))
    words = sorted(set(support.labels))  # the trainer's remap: training label c is the c-th smallest word index
    expected = [words[int(np.argmax([float(q @ w) for w in weight]))] for q in queries.x]
    assert metrics["word_accuracy/softmax"] == pytest.approx(accuracy(expected, queries.labels))
    assert metrics["word_accuracy"] == metrics["word_accuracy/softmax"]  # the loss IS the classifier


def test_headline_rule() -> None:
    assert headline_method(build_loss("triplet")) == "prototype"
    assert headline_method(build_loss("normalized_softmax", num_classes=3, embedding_dim=6)) == "softmax"
    hybrid = Hybrid(build_loss("triplet"), ce_weight=1.0, num_classes=3, embedding_dim=6)
    assert headline_method(hybrid) == "prototype"  # metric loss + CE term: the embedding is what is trained
    metrics = WordRecognitionProtocol(EvalConfig()).evaluate(inputs(hybrid))
    assert "word_accuracy/softmax" in metrics and metrics["word_accuracy"] == metrics["word_accuracy/prototype"]
    untrained = Hybrid(build_loss("triplet"), ce_weight=0.0, num_classes=3, embedding_dim=6)
    assert "word_accuracy/softmax" not in WordRecognitionProtocol(EvalConfig()).evaluate(inputs(untrained))


def test_classifier_of_another_width_and_unseen_words_are_errors() -> None:
    with pytest.raises(DataError, match="scores 4 classes but the training split has 3 words"):
        WordRecognitionProtocol(EvalConfig()).evaluate(inputs(FixedClassifier(torch.randn(4, 6))))
    support, queries = data()
    queries.labels = [*queries.labels[:-1], 4]  # 'four' was never trained on
    unseen = EvalInputs(model=nn.Identity(), loss=build_loss("triplet"), dataset=queries, config=EvalConfig(),
                        device=torch.device("cpu"), support=lambda: support, class_names=WORDS)
    with pytest.raises(DataError, match=r"closed-set.*'four'.*val_by=items"):
        WordRecognitionProtocol(EvalConfig()).evaluate(unseen)


def test_predictions_file_names_the_words(tmp_path: Path) -> None:
    support, queries = data()
    WordRecognitionProtocol(EvalConfig()).write_artifacts(inputs(build_loss("triplet")), tmp_path)
    with np.load(tmp_path / PREDICTIONS_FILE, allow_pickle=False) as npz:
        labels, predictions, names = npz["labels"], npz["predictions"], list(npz["class_names"])
    assert labels.tolist() == queries.labels and names == WORDS
    assert predictions.tolist() == explicit_prototype(support, queries)
    matrix = confusion_matrix(labels, predictions, len(names))  # what the report draws
    assert matrix is not None and matrix.shape == (8, 8) and matrix.sum() == len(labels)
