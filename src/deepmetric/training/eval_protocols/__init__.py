"""Evaluation protocols: what a run is measured by (``eval.protocol``).

Every protocol implements :class:`~deepmetric.training.eval_protocols.base.EvalProtocol`:
``evaluate(inputs) -> {metric: value}`` on one split (called for periodic selection on
``eval.split`` and for the final test metrics) and ``write_artifacts(inputs, run_dir)`` (called
once, on the test split with the final weights: predictions, figures). They are registered in
:data:`EVAL_PROTOCOLS` by name; ``eval.protocol`` may also be an import path.
"""

from deepmetric.registry import Registry
from deepmetric.training.eval_protocols.base import EvalInputs, EvalProtocol, build_eval_protocol

#: evaluation protocol name -> "module:Class"
EVAL_PROTOCOLS = Registry(
    "evaluation protocol",
    {
        "retrieval": "deepmetric.training.eval_protocols.retrieval:RetrievalProtocol",
        "classification": "deepmetric.training.eval_protocols.classification:ClassificationProtocol",
        "reid": "deepmetric.training.eval_protocols.reid:ReIDProtocol",
        "word_recognition": "deepmetric.training.eval_protocols.word_recognition:WordRecognitionProtocol",
        "diagnostic": "deepmetric.training.eval_protocols.diagnostic:DiagnosticProtocol",
    },
)

__all__ = ["EVAL_PROTOCOLS", "EvalInputs", "EvalProtocol", "build_eval_protocol"]
