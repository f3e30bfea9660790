"""Evaluate a model on a dataset: embed every item, then compute retrieval/clustering metrics."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from deepmetric.config import EvalConfig
from deepmetric.errors import ConfigError
from deepmetric.training.embed import embed

__all__ = ["EVALUATOR", "evaluate_model", "metrics_of", "select_value"]

#: the metrics function: (embeddings, labels, query_embeddings=, query_labels=, metrics=,
#: k_values=, metric=, backend=) -> {"recall@1": ..., ...}; each keyword only if accepted
EVALUATOR: str | Callable[..., dict[str, float]] = "deepmetric.evaluation:evaluate_embeddings"


def _evaluator() -> Callable[..., dict[str, float]]:
    from deepmetric.training.builders import resolve

    return resolve(EVALUATOR)


def metrics_of(embeddings: Tensor, labels: Tensor, config: EvalConfig, is_query: Tensor | None = None) -> dict[str, float]:
    """Metrics of precomputed embeddings. With ``is_query`` (bool per item) the marked items are
    queries searched against the others (gallery); otherwise every item is a leave-one-out query."""
    fn = _evaluator()
    params = inspect.signature(fn).parameters
    options: dict[str, Any] = {"k_values": tuple(config.k_values), "metric": config.metric, "backend": config.backend}
    if config.metrics is not None:
        options["metrics"] = tuple(config.metrics)
    kwargs = {k: v for k, v in options.items() if k in params}
    if is_query is not None:
        mask = torch.as_tensor(is_query, dtype=torch.bool)
        result = fn(embeddings[~mask], labels[~mask], query_embeddings=embeddings[mask],
                    query_labels=labels[mask], **kwargs)
    else:
        result = fn(embeddings, labels, **kwargs)
    return {str(k): float(v) for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def evaluate_model(
    model: nn.Module, dataset: Any, config: EvalConfig, device: torch.device, progress: bool = False,
    num_workers: int = 0,
) -> tuple[dict[str, float], Tensor, Tensor]:
    """(metrics, embeddings, labels) of ``model`` on ``dataset``."""
    embeddings, labels = embed(model, dataset, config.batch_size, device, progress, num_workers)
    is_query = getattr(dataset, "is_query", None)
    return metrics_of(embeddings, labels, config, is_query), embeddings, labels


def select_value(metrics: dict[str, float], config: EvalConfig) -> float:
    """The value of ``eval.select_metric``; raises :class:`ConfigError` naming the available keys."""
    if config.select_metric not in metrics:
        from deepmetric.errors import closest_match

        hint = closest_match(config.select_metric, list(metrics))
        did = f" Did you mean '{hint}'?" if hint else ""
        raise ConfigError(
            f"eval.select_metric '{config.select_metric}' is not among the computed metrics.{did} "
            f"Available: {', '.join(sorted(metrics))}."
        )
    value = metrics[config.select_metric]
    if math.isnan(value):
        return -math.inf if config.select_mode == "max" else math.inf
    return value
