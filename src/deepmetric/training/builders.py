"""Config -> objects, in one place: datasets, model, loss, sampler.

The registries live with their layers (:data:`deepmetric.data.registry.DATASETS`,
:data:`deepmetric.data.registry.SAMPLERS`, :data:`deepmetric.models.registry.MODELS`,
:data:`deepmetric.losses.LOSSES`); their module docstrings state the loader and builder
contracts. Every name may also be an import path ``package.module:Name`` to your own part.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from deepmetric.config import Config, LossConfig, ModelConfig, SamplerConfig
from deepmetric.data.registry import DATASETS, SAMPLERS
from deepmetric.errors import ConfigError, DataError
from deepmetric.losses import build_loss, check_kwargs
from deepmetric.models.registry import MODELS
from deepmetric.registry import Registry, import_path
from deepmetric.training.selection import validation_plan
from deepmetric.training.views import SubsetView, carve_validation, dataset_labels

__all__ = [
    "DATASET_REGISTRY",
    "MODEL_REGISTRY",
    "Splits",
    "build_datasets",
    "build_loss_from_config",
    "build_model",
    "build_sampler",
    "resolve",
]

#: the registries, under their earlier names
DATASET_REGISTRY = DATASETS
MODEL_REGISTRY = MODELS


def resolve(entry: str | Callable[..., Any]) -> Callable[..., Any]:
    """Import ``"module:attribute"`` (or return a callable unchanged)."""
    return entry if callable(entry) else import_path(entry, "registry entry")


def _lookup(registry: Registry, name: str) -> Callable[..., Any]:
    fn = registry.resolve(name)
    if not callable(fn):
        raise ConfigError(f"{registry.kind} '{name}' is {type(fn).__name__}, not a class or function")
    return fn


def _accepts(fn: Callable[..., Any]) -> tuple[set[str], bool]:
    params = inspect.signature(fn).parameters
    names = {n for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    return names, any(p.kind is p.VAR_KEYWORD for p in params.values())


def _call(fn: Callable[..., Any], standard: dict[str, Any], params: dict[str, Any], what: str) -> Any:
    """Call ``fn`` with the ``standard`` arguments it accepts plus validated ``params``."""
    check_kwargs(fn, params, what)
    names, var_kw = _accepts(fn)
    kwargs = {k: v for k, v in standard.items() if k in names or var_kw}
    clash = set(kwargs) & set(params)
    if clash:
        raise ConfigError(f"{what}: {sorted(clash)} are set by the config directly; remove them from params")
    return fn(**kwargs, **params)


# --------------------------------------------------------------------------------------------
# model


def resolved_freeze_bn(config: ModelConfig) -> bool:
    """``model.freeze_bn``, with null meaning 'freeze when the backbone is pretrained'."""
    return config.freeze_bn if config.freeze_bn is not None else config.pretrained is not False


def build_model(config: Config) -> nn.Module:
    """The embedding network named by ``model.name``."""
    fn = _lookup(MODELS, config.model.name)
    m = config.model
    standard = {
        "backbone": m.backbone,
        "pretrained": m.pretrained,
        "embedding_dim": m.embedding_dim,
        "pooling": m.pooling,
        "normalize": m.normalize,
        "in_chans": m.in_chans,
        "dropout": m.dropout,
        "freeze_bn": resolved_freeze_bn(m),
        "image_size": config.data.image_size,
    }
    names, var_kw = _accepts(fn)
    if not var_kw:
        defaults = ModelConfig()
        changed = {k for k in standard if k in ModelConfig.model_fields and getattr(m, k) != getattr(defaults, k)}
        if config.data.image_size is not None:
            changed.add("image_size")
        ignored = sorted(k for k in changed if k not in names)
        if ignored:
            raise ConfigError(
                f"model '{m.name}' does not take {', '.join(ignored)}; remove "
                f"{'it' if len(ignored) == 1 else 'them'} from the config (it accepts: {', '.join(sorted(names))})"
            )
    model = _call(fn, standard, dict(m.params), f"model '{m.name}'")
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model builder '{m.name}' returned {type(model).__name__}, not an nn.Module")
    return model


def embedding_dim_of(model: nn.Module) -> int:
    dim = getattr(model, "embedding_dim", None)
    if not isinstance(dim, int):
        raise ConfigError(f"model {type(model).__name__} must expose its output size as .embedding_dim")
    return dim


# --------------------------------------------------------------------------------------------
# loss


def build_loss_from_config(
    config: LossConfig, num_classes: int, embedding_dim: int, outputs: Mapping[str, int] | None = None,
    base: nn.Module | None = None,
) -> nn.Module:
    """``build_loss(name, **params)`` with ``num_classes`` / ``embedding_dim`` injected when the
    loss takes them, then wrapped with Symmetrical Synthesis and/or Hybrid (+ cross-entropy).

    For a model with named outputs (``outputs`` = its ``output_dims``) every output gets its own
    such loss, weighted by ``loss.heads`` (:class:`~deepmetric.losses.multi_output.MultiOutputLoss`).
    ``base``: a loss object used instead of building ``loss.name`` (the wrappers still apply); for
    named outputs it must be a ``MultiOutputLoss`` and is used as it is.
    """
    if base is not None and outputs:
        from deepmetric.losses.multi_output import MultiOutputLoss

        if not isinstance(base, MultiOutputLoss):
            raise ConfigError(
                f"the model has named outputs ({', '.join(outputs)}), which need one loss each; pass a "
                "deepmetric.losses.multi_output.MultiOutputLoss as fit(loss=...), or name the loss in loss.name"
            )
        return base
    if outputs:
        from deepmetric.losses.multi_output import MultiOutputLoss

        return MultiOutputLoss(
            lambda _, dim: build_loss_from_config(config.model_copy(update={"heads": {}}), num_classes, dim),
            dict(outputs), weights=config.heads,
        )
    if config.heads:
        raise ConfigError(
            f"loss.heads is set ({config.heads}) but the model has a single output; remove loss.heads "
            "or use a model with named outputs (multilevel, tracklet)"
        )
    loss = base if base is not None else _named_loss(config, num_classes, embedding_dim)
    if not isinstance(loss, nn.Module):
        raise ConfigError(f"loss '{config.name}' built a {type(loss).__name__}, not a torch.nn.Module")
    # cross-batch memory (XBM): loss.memory_size > 0 wraps the pair loss
    memory_size, memory_start = config.memory_size, config.memory_start_step
    if memory_size > 0:
        if config.synthesis != "none":
            raise ConfigError(
                "loss.memory_size (cross-batch memory) and loss.synthesis cannot be combined: both "
                "rewrite the pair matrix; set loss.synthesis=none or loss.memory_size=0"
            )
        from deepmetric.losses.xbm import CrossBatchMemory

        loss = CrossBatchMemory(loss, memory_size, start_step=memory_start, embedding_dim=embedding_dim)
    elif memory_start:
        raise ConfigError("loss.memory_start_step is set but loss.memory_size is 0; set loss.memory_size=M")
    if config.synthesis == "symmetrical":
        from deepmetric.losses.synthesis import SymmetricalSynthesis

        check_kwargs(SymmetricalSynthesis, config.synthesis_params, "loss.synthesis_params")
        loss = SymmetricalSynthesis(loss, **config.synthesis_params)
    elif config.synthesis_params:
        raise ConfigError("loss.synthesis_params is set but loss.synthesis is 'none'; set loss.synthesis=symmetrical")
    if config.ce_weight > 0:
        from deepmetric.losses.classification import Hybrid

        loss = Hybrid(loss, ce_weight=config.ce_weight, num_classes=num_classes, embedding_dim=embedding_dim)
    return loss


def _named_loss(config: LossConfig, num_classes: int, embedding_dim: int) -> Any:
    from deepmetric.losses import loss_class

    params = dict(config.params)
    names, _ = _accepts(loss_class(config.name))
    for key, value in (("num_classes", num_classes), ("embedding_dim", embedding_dim)):
        if key in names and key not in params:
            params[key] = value
    return build_loss(config.name, **params)


# --------------------------------------------------------------------------------------------
# data


@dataclass
class Splits:
    """The datasets of a run: ``train`` (training transform, labels 0..C-1), ``val`` (evaluation
    transform, carved from the training split, or None), ``test``, and ``support``: the training
    items under the evaluation transform, with the dataset's own labels (word prototypes, k-NN
    classification, nearest-center checks)."""

    train: SubsetView
    val: Any | None
    test: Any
    support: SubsetView
    #: how validation was carved ("classes" or "items"; see deepmetric.training.selection)
    val_by: str = "classes"
    #: what the split arithmetic changed, for the run's warnings
    notes: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return self.train.num_classes


def _transform(model: nn.Module, name: str) -> Any:
    method = getattr(model, name, None)
    return method() if callable(method) else None


def load_splits(config: Config, transform: Any, splits: tuple[str, ...]) -> dict[str, Any]:
    """The named splits of the dataset ``data.name`` with ``transform``, as the loader returns them."""
    d = config.data
    fn = _lookup(DATASETS, d.name)
    names, var_kw = _accepts(fn)
    standard: dict[str, Any] = {"transform": transform, "seed": config.seed}
    if d.root is not None:
        standard["root"] = d.root
    elif "root" in names and inspect.signature(fn).parameters["root"].default is inspect.Parameter.empty:
        raise ConfigError(f"dataset '{d.name}' needs data.root (the path of the data); set data.root=PATH")
    what = f"dataset '{d.name}'"
    if "split" in names or var_kw:
        return {s: _call(fn, {**standard, "split": s}, dict(d.params), what) for s in splits}
    result = _call(fn, standard, dict(d.params), what)
    if not isinstance(result, Mapping) or not all(s in result for s in splits):
        raise ConfigError(
            f"{what} takes no 'split' argument, so it must return a mapping with keys {list(splits)}"
        )
    return {s: result[s] for s in splits}


def _attach_cache(config: Config, train_aug: Any, evaluated: Mapping[str, Any], run_dir: Path | None) -> None:
    """``data.cache``: the training images (and the evaluation splits, where the cache gives them
    the same pixels) read from one decoded-image cache (:mod:`deepmetric.data.cache`)."""
    from deepmetric.data.cache import (
        attach_cache,
        cache_interpolation,
        check_cacheable,
        default_cache_size,
        exact_for,
        transform_mode,
        transform_resolution,
    )
    from deepmetric.data.image_dataset import ImageDataset

    d = config.data
    check_cacheable(train_aug, f"the training split of dataset '{d.name}'")
    transform = train_aug.transform
    size = d.cache_size
    if size is None:
        resolution = transform_resolution(transform) or d.image_size
        if resolution is None:
            raise ConfigError(
                f"data.cache_size=null means 8/7 of the training resolution, but the training transform of dataset "
                f"'{d.name}' names no size; set data.cache_size=N (shorter side in pixels, 0 = full resolution)"
            )
        size = default_cache_size(resolution)
    mode, interpolation = transform_mode(transform), cache_interpolation(transform)
    served = [train_aug] + [
        ds for ds in (evaluated["train"], evaluated["test"])
        if isinstance(ds, ImageDataset) and exact_for(ds.transform, size, interpolation, mode)
    ]
    folder = None
    if d.cache == "disk":
        folder = Path(d.cache_dir) if d.cache_dir else (run_dir.parent if run_dir else Path.cwd()) / ".deepmetric-cache"
    attach_cache(served, d.cache, size, mode, interpolation, folder)


def build_datasets(config: Config, model: nn.Module, *, cache: bool = False, run_dir: Path | None = None) -> Splits:
    """Load train/test, carve validation from the training split (``data.val_fraction``).

    With ``cache`` (what :func:`~deepmetric.training.fit` passes) and ``data.cache`` memory or disk,
    the training images (and the evaluation splits, where that gives the same pixels) are decoded
    once into a cache (:mod:`deepmetric.data.cache`; the disk cache's default folder is
    ``.deepmetric-cache`` next to ``run_dir``); a dataset that is not made of images is a ConfigError.
    """
    need_val = config.data.val_fraction > 0
    if config.eval.split == "val" and not need_val:
        raise ConfigError(
            "eval.split is 'val' but data.val_fraction is 0, so there is no validation split; set "
            "data.val_fraction=0.2 (recommended) or eval.split=test"
        )
    train_aug = load_splits(config, _transform(model, "train_transform"), ("train",))["train"]
    evaluated = load_splits(config, _transform(model, "eval_transform"), ("train", "test"))
    labels = dataset_labels(train_aug)
    if len(set(labels)) < 2:
        raise DataError(f"the training split of dataset '{config.data.name}' has {len(set(labels))} class(es); need >= 2")
    if cache and config.data.cache != "none":
        _attach_cache(config, train_aug, evaluated, run_dir)
    val_by, note = validation_plan(config.data.val_by, len(set(labels)), config.data.val_fraction)
    train_idx, val_idx = carve_validation(labels, config.data.val_fraction, val_by, config.seed)
    train = SubsetView(train_aug, train_idx, remap=True)
    val = SubsetView(evaluated["train"], val_idx, remap=False) if need_val else None
    support = SubsetView(evaluated["train"], train_idx, remap=False)
    return Splits(train=train, val=val, test=evaluated["test"], support=support, val_by=val_by,
                  notes=[note] if note else [])


def build_sampler(labels: list[int], config: SamplerConfig, seed: int, rank: int = 0, world_size: int = 1) -> Any:
    """The batch sampler over ``labels``: P x K (``sampler.name: pk``) or triplet batches
    (``sampler.name: triplet``: ``triplets_per_batch`` (null = p) triplets per batch,
    ``batches_per_epoch`` (null = ceil(N / (3 x triplets))) batches per epoch). With several
    processes, rank ``rank`` of ``world_size`` draws its own disjoint share of P x K batches."""
    if config.name == "triplet":
        if world_size > 1:
            raise ConfigError(
                "sampler.name=triplet does not support multi-process training yet; use sampler.name=pk "
                "or train in one process"
            )
        triplets = config.triplets_per_batch if config.triplets_per_batch is not None else config.p
        per_epoch = config.batches_per_epoch
        if per_epoch is None:
            per_epoch = max(1, -(-len(labels) // (3 * triplets)))
        return SAMPLERS.resolve("triplet")(labels, triplets_per_batch=triplets, batches_per_epoch=per_epoch, seed=seed)
    cls = SAMPLERS.resolve("pk")
    if world_size > 1:
        return cls(labels, p=config.p, k=config.k, seed=seed, small_class_policy=config.small_class_policy,
                   rank=rank, world_size=world_size)
    return cls(labels, p=config.p, k=config.k, seed=seed, small_class_policy=config.small_class_policy)
