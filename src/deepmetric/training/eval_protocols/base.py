"""The contract of an evaluation protocol and the inputs it receives.

:class:`EvalInputs` bundles what a protocol may need -- the model, the loss (its classifier head
or centers, through :mod:`deepmetric.losses.contracts`), the evaluated split, the *support*
split (the training items under the evaluation transform: prototypes, k-NN classification) and
the ``eval`` config -- and embeds each split at most once (cached).

A protocol returns plain ``{name: float}`` metrics. Every protocol includes the retrieval
metrics (Recall@K, MAP@R, ...) of the split, so ``eval.select_metric: map@r`` works everywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from deepmetric.config import EvalConfig
from deepmetric.training.embed import embed

__all__ = ["EvalInputs", "EvalProtocol", "build_eval_protocol"]


@dataclass
class EvalInputs:
    """What an evaluation protocol receives (see the module docstring)."""

    model: nn.Module
    loss: nn.Module
    dataset: Any
    config: EvalConfig
    device: torch.device
    support: Callable[[], Any] | None = None
    num_workers: int = 0
    class_names: list[str] | None = None
    _cache: dict[str, tuple[Tensor, Tensor]] = field(default_factory=dict, repr=False)

    def embeddings(self) -> tuple[Tensor, Tensor]:
        """(N x D float32 CPU embeddings, N labels) of :attr:`dataset`, computed once."""
        if "dataset" not in self._cache:
            self._cache["dataset"] = embed(self.model, self.dataset, self.config.batch_size, self.device,
                                           num_workers=self.num_workers)
        return self._cache["dataset"]

    def support_embeddings(self) -> tuple[Tensor, Tensor] | None:
        """Embeddings and labels of the support split (training items, evaluation transform), or None."""
        if self.support is None:
            return None
        if "support" not in self._cache:
            self._cache["support"] = embed(self.model, self.support(), self.config.batch_size, self.device,
                                           num_workers=self.num_workers)
        return self._cache["support"]


class EvalProtocol(Protocol):
    """What the trainer calls; see :mod:`deepmetric.training.eval_protocols`."""

    def evaluate(self, inputs: EvalInputs) -> dict[str, float]:
        """Metrics of ``inputs.dataset``."""
        ...

    def write_artifacts(self, inputs: EvalInputs, run_dir: Path) -> None:
        """Write predictions / figures of the final test evaluation into ``run_dir``."""
        ...


def build_eval_protocol(config: EvalConfig) -> EvalProtocol:
    """The protocol named by ``eval.protocol``, built from the ``eval`` config."""
    from deepmetric.training.eval_protocols import EVAL_PROTOCOLS

    return EVAL_PROTOCOLS.resolve(config.protocol)(config)
