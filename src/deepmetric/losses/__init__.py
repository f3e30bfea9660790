"""Loss modules: thin ``nn.Module`` wrappers over :mod:`deepmetric.functional`.

Every loss is reachable by name through :func:`build_loss`, which validates its parameters
against the class signature (an unknown parameter is an error naming the closest valid one).
Classes are imported lazily so that optional pieces never slow down ``import deepmetric``.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from torch import nn

from deepmetric.errors import ConfigError, closest_match
from deepmetric.losses.base import MetricLoss, PairLoss
from deepmetric.registry import Registry

_LOSS_CLASSES: dict[str, str] = {
    "contrastive": "contrastive:ContrastiveLoss",
    "osm_caa": "osm_caa:OSMCAALoss",
    "triplet": "triplet:TripletLoss",
    "lifted_structure": "lifted:LiftedStructureLoss",
    "npair": "npair:NPairLoss",
    "angular": "angular:AngularLoss",
    "multi_similarity": "multi_similarity:MultiSimilarityLoss",
    "proxy_anchor": "proxy_anchor:ProxyAnchorLoss",
    "normalized_softmax": "classification:NormalizedSoftmaxLoss",
    "ranked_list": "ranked_list:RankedListLoss",
    "center_structured": "center_structured:CenterStructuredLoss",
    "triplet_hybrid": "triplet_hybrid:TripletHybridLoss",
    "arcface": "margin_softmax:ArcFaceLoss",
    "cosface": "margin_softmax:CosFaceLoss",
    "subcenter_arcface": "margin_softmax:SubCenterArcFaceLoss",
    "circle": "circle:CircleLoss",
    "supcon": "supcon:SupConLoss",
    "ntxent": "supcon:NTXentLoss",
    "proxy_nca_pp": "proxy_nca:ProxyNCAPPLoss",
}

#: loss name -> "deepmetric.losses.module:Class"; ``loss.name`` may also be an import path
#: ``package.module:Name`` (e.g. a pytorch-metric-learning loss, or your own nn.Module)
LOSSES = Registry("loss", {name: f"deepmetric.losses.{path}" for name, path in _LOSS_CLASSES.items()})
LOSS_REGISTRY = LOSSES  # the earlier name


def loss_class(name: str) -> type[nn.Module]:
    """The class registered under ``name``, or imported from ``package.module:Name``."""
    cls = LOSSES.resolve(name)
    if not callable(cls):
        raise ConfigError(f"loss '{name}' is {type(cls).__name__}, not a loss class or factory")
    return cls


def check_kwargs(target: Any, kwargs: dict[str, Any], what: str) -> None:
    """Raise :class:`ConfigError` if ``kwargs`` has a key that ``target``'s signature lacks."""
    params = inspect.signature(target).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    valid = [n for n, p in params.items() if n != "self"]
    for key in kwargs:
        if key not in valid:
            hint = closest_match(key, valid)
            did = f" Did you mean '{hint}'?" if hint else ""
            raise ConfigError(
                f"unknown parameter '{key}' for {what}.{did} Valid parameters: {', '.join(valid)}."
            )


def build_loss(name: str, **params: Any) -> nn.Module:
    """Instantiate the loss registered as ``name`` with validated keyword parameters."""
    cls = loss_class(name)
    check_kwargs(cls, params, f"loss '{name}'")
    return cls(**params)


#: public names that are not registry losses: wrappers and helpers, imported lazily too
EXTRA_EXPORTS: dict[str, str] = {
    "Hybrid": "classification:Hybrid",
    "predict": "classification:predict",
    "SymmetricalSynthesis": "synthesis:SymmetricalSynthesis",
    "MultiOutputLoss": "multi_output:MultiOutputLoss",
    "CrossBatchMemory": "xbm:CrossBatchMemory",
}


def __getattr__(attr: str) -> Any:
    if attr in EXTRA_EXPORTS:
        module_name, name = EXTRA_EXPORTS[attr].split(":")
        return getattr(importlib.import_module(f"deepmetric.losses.{module_name}"), name)
    for path in _LOSS_CLASSES.values():
        module_name, class_name = path.split(":")
        if class_name == attr:
            return getattr(importlib.import_module(f"deepmetric.losses.{module_name}"), class_name)
    raise AttributeError(f"module 'deepmetric.losses' has no attribute '{attr}'")


__all__ = [
    "LOSSES", "LOSS_REGISTRY", "MetricLoss", "PairLoss", "build_loss", "check_kwargs", "loss_class",
    "Hybrid", "predict", "SymmetricalSynthesis",
]
