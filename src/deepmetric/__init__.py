"""deepmetric: deep metric learning with fast losses, trustworthy evaluation and six published methods."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from deepmetric.errors import ConfigError, DataError, DeepMetricError, InputError

if TYPE_CHECKING:
    import torch

    from deepmetric.deploy import Embedder

from deepmetric.version import __version__

__all__ = ["ConfigError", "DataError", "DeepMetricError", "InputError", "__version__", "load"]


def load(run: str | Path, which: str = "best", device: str | torch.device = "auto") -> Embedder:
    """The :class:`~deepmetric.deploy.Embedder` of a trained run folder (or a checkpoint inside one):
    ``deepmetric.load("runs/demo").embed(["a.jpg", "b.jpg"])`` -> ``(2, D)`` float32 embeddings.
    See :func:`deepmetric.deploy.load`."""
    from deepmetric.deploy import load as _load

    return _load(run, which=which, device=device)
