"""Config -> objects, in one place: datasets, model, loss, sampler.

Registries map a name to ``"module:attribute"`` (imported lazily, only when used) or to a
callable. Adding a dataset or model is one line::

    DATASET_REGISTRY["fsdd"] = "deepmetric.data.speech:fsdd_dataset"

**Dataset loader contract.** A loader is called as
``fn(root=..., split="train" | "test", transform=..., seed=..., **data.params)`` -- each of
``root``, ``split``, ``transform`` and ``seed`` only if its signature has a parameter of that
name -- and returns a ``torch.utils.data.Dataset`` whose items are ``(input, label, ...)`` with
``.labels`` (one int per item) and optionally ``.paths``, ``.class_names``, ``.collate_fn`` and
``.is_query`` (bool per item: the test split is then evaluated as queries against the rest as
gallery). A loader without a ``split`` parameter may instead return a mapping
``{"train": dataset, "test": dataset}``. ``data.params`` keys are checked against the signature.

**Model builder contract.** Called with the ``model.*`` keys its signature accepts (plus
``image_size`` from ``data.image_size``) and ``**model.params``; returns an ``nn.Module`` mapping
a batch of inputs to N x D embeddings, with ``.embedding_dim`` and optionally
``.train_transform()`` / ``.eval_transform()`` and ``.backbone_parameters()`` /
``.head_parameters()``. A ``model.*`` key that the builder does not accept must stay at its
default: a different value is an error.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from deepmetric.config import Config, LossConfig, ModelConfig, SamplerConfig
from deepmetric.errors import ConfigError, DataError, unknown_name_message
from deepmetric.losses import build_loss, check_kwargs
from deepmetric.training.views import SubsetView, carve_validation, dataset_labels

__all__ = [
    "DATASET_REGISTRY",
    "MODEL_REGISTRY",
    "SAMPLER",
    "TRIPLET_SAMPLER",
    "Splits",
    "build_datasets",
    "build_loss_from_config",
    "build_model",
    "build_sampler",
    "resolve",
]

#: dataset name -> "module:function" (or a callable), see the loader contract above
DATASET_REGISTRY: dict[str, str | Callable[..., Any]] = {
    "folder": "deepmetric.data.folder:folder_dataset",
    "csv": "deepmetric.data.manifest:csv_dataset",
    "omniglot": "deepmetric.data.omniglot:omniglot_dataset",
    "olivetti": "deepmetric.data.olivetti:olivetti_dataset",
    "cub200": "deepmetric.data.benchmarks:cub200_dataset",
    "cars196": "deepmetric.data.benchmarks:cars196_dataset",
    "sop": "deepmetric.data.benchmarks:sop_dataset",
    "inshop": "deepmetric.data.benchmarks:inshop_dataset",
    "brazilian_coffee": "deepmetric.data.brazilian_coffee:brazilian_coffee_dataset",
    "scene_folder": "deepmetric.data.scene_split:scene_folder_dataset",
    "ph2": "deepmetric.experiments.skin_lesions:ph2_dataset",
    "isic2016": "deepmetric.experiments.skin_lesions:isic2016_dataset",
    "isic2017": "deepmetric.experiments.skin_lesions:isic2017_dataset",
    "fsdd": "deepmetric.data.speech:fsdd_dataset",
}

#: model name -> "module:function" (or a callable), see the model builder contract above
MODEL_REGISTRY: dict[str, str | Callable[..., Any]] = {
    "embedder": "deepmetric.models:create_embedder",
    "demal": "deepmetric.models.demal:create_demal",
    "audio_cnn": "deepmetric.models.audio:UtteranceEmbedder",
    "multilevel": "deepmetric.models.multilevel:MultiLevelEmbedder",
}

#: the P x K batch sampler class: (labels, p, k, seed, small_class_policy) with set_epoch(epoch)
SAMPLER: str | Callable[..., Any] = "deepmetric.data.samplers:PKSampler"

#: the triplet batch sampler class (``sampler.name: triplet``): (labels, triplets_per_batch,
#: batches_per_epoch, seed) with set_epoch(epoch); batches laid out [anchors; positives; negatives]
TRIPLET_SAMPLER: str | Callable[..., Any] = "deepmetric.data.triplet_sampler:TripletBatchSampler"


def resolve(entry: str | Callable[..., Any]) -> Callable[..., Any]:
    """Import ``"module:attribute"`` (or return a callable unchanged)."""
    if callable(entry):
        return entry
    module_name, _, attr = entry.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            f"registry entry '{entry}' cannot be imported ({exc}); this component is not available "
            "in this installation"
        ) from exc


def _lookup(registry: Mapping[str, Any], name: str, kind: str) -> Callable[..., Any]:
    if name not in registry:
        raise ConfigError(unknown_name_message(kind, name, registry))
    return resolve(registry[name])


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
    fn = _lookup(MODEL_REGISTRY, config.model.name, "model")
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
    config: LossConfig, num_classes: int, embedding_dim: int, head_dims: Mapping[str, int] | None = None
) -> nn.Module:
    """``build_loss(name, **params)`` with ``num_classes`` / ``embedding_dim`` injected when the
    loss takes them, then wrapped with Symmetrical Synthesis and/or Hybrid (+ cross-entropy).
    For a multi-head model (``head_dims``, e.g. :class:`~deepmetric.models.multilevel.MultiLevelEmbedder`)
    every head gets its own such loss and their sum is returned (:class:`MultiHeadLoss`)."""
    if head_dims:
        from deepmetric.models.multilevel import MultiHeadLoss

        return MultiHeadLoss(lambda _, dim: build_loss_from_config(config, num_classes, dim), dict(head_dims))
    from deepmetric.losses import loss_class

    params = dict(config.params)
    names, _ = _accepts(loss_class(config.name))
    for key, value in (("num_classes", num_classes), ("embedding_dim", embedding_dim)):
        if key in names and key not in params:
            params[key] = value
    loss = build_loss(config.name, **params)
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


# --------------------------------------------------------------------------------------------
# data


@dataclass
class Splits:
    """The datasets of a run: ``train`` (training transform, labels 0..C-1), ``val`` (evaluation
    transform, carved from the training split, or None) and ``test``."""

    train: SubsetView
    val: Any | None
    test: Any

    @property
    def num_classes(self) -> int:
        return self.train.num_classes


def _transform(model: nn.Module, name: str) -> Any:
    method = getattr(model, name, None)
    return method() if callable(method) else None


def _load_splits(config: Config, transform: Any, splits: tuple[str, ...]) -> dict[str, Any]:
    d = config.data
    fn = _lookup(DATASET_REGISTRY, d.name, "dataset")
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


def build_datasets(config: Config, model: nn.Module) -> Splits:
    """Load train/test, carve validation from the training split (``data.val_fraction``)."""
    need_val = config.data.val_fraction > 0
    if config.eval.split == "val" and not need_val:
        raise ConfigError(
            "eval.split is 'val' but data.val_fraction is 0, so there is no validation split; set "
            "data.val_fraction=0.2 (recommended) or eval.split=test"
        )
    train_aug = _load_splits(config, _transform(model, "train_transform"), ("train",))["train"]
    evaluated = _load_splits(config, _transform(model, "eval_transform"), ("train", "test") if need_val else ("test",))
    labels = dataset_labels(train_aug)
    if len(set(labels)) < 2:
        raise DataError(f"the training split of dataset '{config.data.name}' has {len(set(labels))} class(es); need >= 2")
    train_idx, val_idx = carve_validation(labels, config.data.val_fraction, config.data.val_by, config.seed)
    train = SubsetView(train_aug, train_idx, remap=True)
    val = SubsetView(evaluated["train"], val_idx, remap=False) if need_val else None
    return Splits(train=train, val=val, test=evaluated["test"])


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
        return resolve(TRIPLET_SAMPLER)(labels, triplets_per_batch=triplets, batches_per_epoch=per_epoch, seed=seed)
    cls = resolve(SAMPLER)
    if world_size > 1:
        return cls(labels, p=config.p, k=config.k, seed=seed, small_class_policy=config.small_class_policy,
                   rank=rank, world_size=world_size)
    return cls(labels, p=config.p, k=config.k, seed=seed, small_class_policy=config.small_class_policy)
