"""Deploying a trained run: embed raw items from Python, or export the model to a file.

* :func:`load` (also ``deepmetric.load``) -> :class:`Embedder`, an ``nn.Module`` with
  ``preprocess(items)`` and ``embed(items) -> numpy`` (:mod:`deepmetric.deploy.embedder_api`);
* :func:`export_run` (``deepmetric export RUN -o model.onnx | model.pt2 | model.ts``) writes the
  same computation as ONNX, torch.export or TorchScript, checks it against PyTorch at another batch
  size, and describes it in ``<file>.json`` (:class:`ExportManifest`; :mod:`deepmetric.deploy.export`).
* :mod:`deepmetric.deploy.sharded_embed` (``deepmetric embed RUN INPUTS -o OUT_DIR --nproc N``) and
  :mod:`deepmetric.deploy.index_build` (``deepmetric index OUT_DIR``): galleries too large for one
  process or one machine's memory, see docs/scale_out.md.

The exported graph and the Embedder's forward are one module (:mod:`deepmetric.deploy.graph`), so
they compute the same embedding: a model's evaluation embedding (``"embedding"`` of a model with
named outputs).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from deepmetric.deploy.embedder_api import Embedder, load
    from deepmetric.deploy.export import export_run
    from deepmetric.deploy.formats import FORMATS, SUFFIXES, resolve_format
    from deepmetric.deploy.manifest import ExportManifest, ModelCard, manifest_path

#: public name -> its module; imported on first use, so ``deepmetric.deploy.<other module>`` stays light
_EXPORTS = {
    "Embedder": "embedder_api", "load": "embedder_api", "export_run": "export",
    "FORMATS": "formats", "SUFFIXES": "formats", "resolve_format": "formats",
    "ExportManifest": "manifest", "ModelCard": "manifest", "manifest_path": "manifest",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'deepmetric.deploy' has no attribute '{name}'")
    return getattr(importlib.import_module(f"deepmetric.deploy.{_EXPORTS[name]}"), name)
