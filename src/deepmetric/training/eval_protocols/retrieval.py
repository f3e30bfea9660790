"""Retrieval: every item a leave-one-out query against the others, or the items the test split
marks as queries (``is_query``) against the rest as gallery. Metrics of
:func:`deepmetric.evaluation.evaluate_embeddings` (Recall@K, Precision@1, R-precision, MAP@R,
NMI, ...)."""

from __future__ import annotations

from pathlib import Path

from deepmetric.config import EvalConfig
from deepmetric.training.eval_protocols.base import EvalInputs
from deepmetric.training.evaluate import metrics_of

__all__ = ["RetrievalProtocol"]


class RetrievalProtocol:
    """Retrieval metrics of a split (see the module docstring)."""

    def __init__(self, config: EvalConfig) -> None:
        self.config = config

    def evaluate(self, inputs: EvalInputs) -> dict[str, float]:
        embeddings, labels = inputs.embeddings()
        return metrics_of(embeddings, labels, self.config, getattr(inputs.dataset, "is_query", None))

    def write_artifacts(self, inputs: EvalInputs, run_dir: Path) -> None:
        """Nothing beyond the trainer's own ``test_embeddings.npz``."""
