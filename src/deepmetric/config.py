"""The configuration schema: the single source of defaults for the Python API, the CLI and recipes.

A :class:`Config` is a tree of small pydantic models (``data``, ``sampler``, ``model``, ``loss``,
``optimizer``, ``scheduler``, ``trainer``, ``eval``, ``finetune``, ``protocol``). Every section
forbids unknown keys; a typo raises :class:`~deepmetric.errors.ConfigError` naming the closest valid key, e.g.
``unknown config key 'trainer.lrr'; did you mean 'optimizer.lr'?``.

Free-form ``params`` dictionaries (``data.params``, ``model.params``, ``loss.params``,
``loss.synthesis_params``) are handed to the dataset / model / loss constructor by name and are
validated against that constructor's signature when the objects are built
(:mod:`deepmetric.training.builders`).

Use :func:`load_config` to read a YAML file (or a dict) and apply ``a.b=value`` overrides, and
:func:`config_to_yaml` / :func:`save_config` to write the resolved configuration back. Every key,
its default and its meaning are listed in ``docs/config.md`` (generated from
:func:`describe_config`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from deepmetric.errors import ConfigError, closest_match

__all__ = [
    "Config",
    "DataConfig",
    "EvalConfig",
    "FinetuneConfig",
    "LossConfig",
    "ModelConfig",
    "OptimizerConfig",
    "ProtocolConfig",
    "SamplerConfig",
    "SchedulerConfig",
    "TrainerConfig",
    "apply_overrides",
    "config_keys",
    "config_to_yaml",
    "describe_config",
    "load_config",
    "save_config",
]


class _Section(BaseModel):
    """Base of every section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


class DataConfig(_Section):
    """Which dataset to load and how to carve the validation split."""

    name: str = Field(
        "folder",
        description="dataset loader from the dataset registry (folder, csv, omniglot, olivetti, "
        "cub200, cars196, sop, inshop, scene_folder, brazilian_coffee, ph2, isic2016, isic2017, "
        "fsdd, speech_commands, speech_csv, mars, prid2011, ilidsvid, market1501, tracklet_csv) or "
        "an import path package.module:function to your own loader",
    )
    root: str | None = Field(
        None, description="path of the dataset (folder, zip, npz or CSV file, depending on the loader)"
    )
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="extra keyword arguments of the loader (e.g. class-split options); checked "
        "against the loader's signature",
    )
    val_fraction: float = Field(
        0.2,
        ge=0.0,
        lt=1.0,
        description="fraction of the TRAINING split held out for validation (checkpoint selection, "
        "early stopping); 0 disables the validation split",
    )
    val_by: Literal["classes", "items"] = Field(
        "classes",
        description="carve validation from whole training classes (zero-shot retrieval) or from "
        "items of every class (closed-set classification); 'classes' falls back to items, with a warning, "
        "when fewer than 3 training classes would remain, and sampler.p shrinks (K grows) when fewer than P remain",
    )
    image_size: int | None = Field(
        None, gt=0, description="input side length in pixels; null = the model's default"
    )
    num_workers: int | Literal["auto"] = Field(
        "auto",
        description="data-loading worker processes (0 = main process); 'auto' = chosen for the machine and "
        "the data (0 when data.cache is set and training runs on the CPU, else min(4, CPU cores - 1)), said in the log",
    )
    cache: Literal["none", "memory", "disk"] = Field(
        "none",
        description="decode each training image once, at data.cache_size, and apply the random augmentation "
        "to the cached pixels (uint8): 'memory' keeps them in RAM, 'disk' in a memory-mapped file under "
        "data.cache_dir (shared by runs on the same images)",
    )
    cache_size: int | None = Field(
        None,
        ge=0,
        description="shorter side (pixels) of cached images; null = 8/7 of the training resolution (e.g. 146 "
        "for 128), 0 = full resolution (then cached and uncached batches are identical)",
    )
    cache_dir: str | None = Field(
        None, description="folder of the 'disk' cache; null = .deepmetric-cache in the run folder's parent"
    )


class SamplerConfig(_Section):
    """The training batch sampler: P x K class-balanced batches, or triplet batches."""

    name: Literal["pk", "triplet"] = Field(
        "pk",
        description="'pk': p classes x k samples per batch; 'triplet': class-balanced triplet batches "
        "laid out [anchors; positives; negatives] (for loss triplet_hybrid)",
    )
    p: int = Field(8, ge=2, description="classes per batch")
    k: int = Field(4, ge=2, description="samples per class in a batch")
    small_class_policy: Literal["replace", "drop", "error"] = Field(
        "replace",
        description="a class with fewer than k samples is sampled with replacement, dropped, or an error",
    )
    triplets_per_batch: int | None = Field(
        None, gt=0, description="'triplet': triplets per batch (3x this many images); null = p"
    )
    batches_per_epoch: int | None = Field(
        None,
        gt=0,
        description="'triplet': batches per epoch; null = ceil(training items / (3 x triplets per batch))",
    )


class ModelConfig(_Section):
    """The embedding network."""

    name: str = Field(
        "embedder",
        description="model builder from the model registry (embedder, multilevel, demal, audio_cnn, audio_tdnn, "
        "tracklet) or an import path package.module:Name to your own nn.Module class or builder",
    )
    backbone: str = Field("tf_efficientnet_lite0", description="backbone architecture name")
    pretrained: bool | str = Field(
        "offline",
        description="'offline' (bundled ImageNet weights), true (the local timm / Hugging Face cache), "
        "false (random init) or a path to a weights file; nothing is ever downloaded",
    )
    embedding_dim: int = Field(128, gt=0, description="size of the embedding")
    pooling: str = Field("avg", description="global pooling of the backbone feature map")
    normalize: bool = Field(True, description="L2-normalise the embeddings")
    in_chans: int = Field(3, gt=0, description="input channels")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout before the embedding layer")
    freeze_bn: bool | None = Field(
        None,
        description="freeze BatchNorm statistics; null = freeze when the backbone is pretrained",
    )
    params: dict[str, Any] = Field(
        default_factory=dict, description="extra keyword arguments of the model builder"
    )
    init_from: str | None = Field(
        None,
        description="start from the weights of another run: a run folder (its best.pt, else last.pt) "
        "or a checkpoint file; the model's weights load strictly, the loss's (classifier, centers) "
        "when their shapes match (fine-tuning, speaker transfer)",
    )


class LossConfig(_Section):
    """The training loss."""

    name: str = Field(
        "multi_similarity",
        description="loss from the loss registry, or an import path package.module:Name to your own loss",
    )
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="keyword arguments of the loss; checked against its signature "
        "(num_classes and embedding_dim are filled in automatically)",
    )
    ce_weight: float = Field(
        0.0, ge=0.0, description="> 0 adds a cross-entropy classifier term with this weight (Hybrid)"
    )
    synthesis: Literal["none", "symmetrical"] = Field(
        "none", description="wrap the loss with Symmetrical Synthesis (Gu and Ko, AAAI 2020)"
    )
    synthesis_params: dict[str, Any] = Field(
        default_factory=dict, description="keyword arguments of the synthesis wrapper (alpha, beta)"
    )
    memory_size: int = Field(
        0,
        ge=0,
        description="> 0 wraps the pair loss in a cross-batch memory (XBM, Wang et al. CVPR 2020) of this many "
        "past embeddings: the batch is scored against batch + memory; must be >= the batch (gathered over "
        "processes); in the checkpoint, so resume stays exact",
    )
    memory_start_step: int = Field(
        0, ge=0, description="training steps before the cross-batch memory is used and filled (warm-up)"
    )
    heads: dict[str, float] = Field(
        default_factory=dict,
        description="models with named outputs (multilevel, tracklet): weight of each output's loss, "
        "e.g. {frame: 1.0, tracklet: 1.0}; every output gets its own copy of this loss; unnamed "
        "outputs weigh 1, and 0 switches an output's loss off",
    )


class OptimizerConfig(_Section):
    """Optimizer and per-group learning-rate multipliers."""

    name: Literal["sgd", "adamw"] = Field("adamw", description="optimizer")
    lr: float = Field(3e-4, gt=0.0, description="base learning rate (the head's, before multipliers)")
    weight_decay: float = Field(1e-4, ge=0.0, description="weight decay")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD momentum")
    nesterov: bool = Field(False, description="Nesterov momentum (SGD)")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas")
    backbone_lr_mult: float = Field(
        0.1, ge=0.0, description="backbone learning rate = lr x this (0 freezes the backbone)"
    )
    head_lr_mult: float = Field(1.0, ge=0.0, description="embedding-head learning rate = lr x this")
    loss_lr_mult: float = Field(
        1.0, ge=0.0, description="loss parameters (classifier, proxies, centers) learning rate = lr x this"
    )


class SchedulerConfig(_Section):
    """Learning-rate schedule, applied per step (factor x each group's base learning rate)."""

    name: Literal["none", "step", "cosine"] = Field("cosine", description="schedule after warm-up")
    warmup_steps: int = Field(
        100, ge=0, description="linear warm-up steps: factor (s+1)/warmup_steps for step s < warmup_steps"
    )
    step_size: int = Field(1000, gt=0, description="'step': multiply by gamma every step_size steps")
    gamma: float = Field(0.1, gt=0.0, description="'step': decay factor")
    min_lr_ratio: float = Field(
        0.0, ge=0.0, le=1.0, description="'cosine': final learning rate as a fraction of the base"
    )


class TrainerConfig(_Section):
    """Length of training, evaluation cadence and numerics."""

    steps: int | None = Field(
        None, gt=0, description="optimizer steps (set steps OR epochs; neither = 1000 steps)"
    )
    epochs: int | None = Field(None, gt=0, description="passes of the P x K sampler over the data")
    eval_every: int = Field(
        100, ge=0, description="evaluate on eval.split every this many steps (0 = only at the end)"
    )
    checkpoint_every: int = Field(100, ge=0, description="write checkpoints/last.pt every this many steps")
    grad_clip: float | None = Field(None, gt=0.0, description="clip the gradient norm to this value")
    amp: bool | Literal["auto"] = Field(
        "auto", description="mixed precision; 'auto' = on when training on a CUDA GPU"
    )
    log_every: int = Field(10, gt=0, description="write a log.csv row every this many steps")
    early_stopping_patience: int | None = Field(
        None, gt=0, description="stop after this many evaluations without improvement"
    )

    @model_validator(mode="after")
    def _steps_or_epochs(self) -> TrainerConfig:
        if self.steps is not None and self.epochs is not None:
            raise ValueError("set trainer.steps OR trainer.epochs, not both (set the other to null)")
        return self


class EvalConfig(_Section):
    """Evaluation and checkpoint selection."""

    protocol: Literal["retrieval", "classification", "reid", "word_recognition", "diagnostic"] = Field(
        "retrieval",
        description="what the run is measured by: 'retrieval' (leave-one-out, or query/gallery when "
        "the test split marks queries), 'classification' (softmax head, nearest center and k-NN "
        "accuracy), 'reid' (CMC and mAP, same-camera matches excluded), 'word_recognition' "
        "(nearest word prototype of the training items), 'diagnostic' (balanced accuracy, "
        "sensitivity, specificity, AUC of the positive class); every protocol also reports the "
        "retrieval metrics",
    )
    split: Literal["val", "test"] = Field(
        "val", description="split used for periodic evaluation and best-checkpoint selection"
    )
    metrics: list[str] | None = Field(None, description="metric families to compute; null = evaluator default")
    k_values: list[int] = Field(default_factory=lambda: [1, 2, 4, 8], description="K of Recall@K")
    metric: Literal["cosine", "euclidean"] = Field("cosine", description="similarity for k-NN retrieval")
    backend: Literal["exact", "faiss"] = Field(
        "exact", description="k-NN backend: exact (torch, blocked on CPU) or faiss (needs faiss installed)"
    )
    select_metric: str = Field("map@r", description="metric that chooses checkpoints/best.pt")
    select_mode: Literal["max", "min"] = Field("max", description="whether a larger select_metric is better")
    baseline: bool = Field(True, description="evaluate the untrained (pretrained-features) network on test")
    batch_size: int = Field(128, gt=0, description="batch size for embedding during evaluation")
    checkpoint: Literal["best", "last"] = Field(
        "best", description="weights whose test metrics are final: chosen on eval.split (best) or the last step"
    )
    rerank: bool = Field(False, description="'reid': also report k-reciprocal re-ranking (Zhong et al., CVPR 2017)")
    rerank_k1: int = Field(20, gt=0, description="'reid' re-ranking: k1")
    rerank_k2: int = Field(6, gt=0, description="'reid' re-ranking: k2")
    rerank_lambda: float = Field(0.3, ge=0.0, le=1.0, description="'reid' re-ranking: weight of the original distance")
    positive_class: str | None = Field(
        None, description="'diagnostic': name of the positive (e.g. malignant) class; null = melanoma or malignant"
    )
    heatmaps: int = Field(4, ge=0, description="'diagnostic': test images shown with Grad-CAM in the report (0 = none)")


class FinetuneConfig(_Section):
    """Robust fine-tuning of a pretrained backbone (all off by default): linear probing before
    fine-tuning (LP-FT), an exponential moving average of the weights (EMA) and interpolation with
    the pretrained weights after training (WiSE-FT)."""

    linear_probe_steps: int = Field(
        0,
        ge=0,
        description="LP-FT (Kumar et al., ICLR 2022, 'Fine-Tuning can Distort Pretrained Features and "
        "Underperform Out-of-Distribution'): for the first this many steps the backbone is frozen (no gradient, "
        "no optimizer update or weight decay, eval mode so BatchNorm statistics stay) while the embedding head and "
        "the loss's parameters (classifier, proxies, centers) train; then everything trains; needs a model that "
        "declares its backbone (HasBackbone); 0 = off",
    )
    ema_decay: float | None = Field(
        None,
        gt=0.0,
        lt=1.0,
        description="exponential moving average of the weights (Polyak averaging, as in timm's ModelEmaV2; "
        "Izmailov et al., UAI 2018 average weights likewise): after every optimizer step ema = decay x ema + "
        "(1 - decay) x weights for the model's parameters and float buffers and the loss's parameters; evaluated "
        "beside the raw weights at every evaluation, and best.pt / the test metrics take whichever scores better "
        "on eval.split; in the checkpoint, so resume stays exact; e.g. 0.999; null = off",
    )
    ema_start_step: int = Field(
        0,
        ge=0,
        description="the EMA starts as a copy of the weights after this many optimizer steps (0 = the initial "
        "weights) and averages from the next step on",
    )
    wise_alphas: list[float] | None = Field(
        None,
        description="WiSE-FT (Wortsman et al., CVPR 2022, 'Robust fine-tuning of zero-shot models'): after "
        "training, the model's weights theta(alpha) = (1 - alpha) x step-0 weights + alpha x fine-tuned weights "
        "(BatchNorm statistics alike, integer buffers fine-tuned; the loss's parameters stay fine-tuned) for each "
        "alpha of this grid, e.g. [0, 0.25, 0.5, 0.75, 1]; the alpha with the best eval.select_metric on eval.split "
        "gives the test metrics (checkpoints/wise.pt; step-0 weights in checkpoints/initial.pt); null = off",
    )

    @model_validator(mode="after")
    def _alphas_in_range(self) -> FinetuneConfig:
        alphas = self.wise_alphas
        if alphas is not None and (
            not alphas or any(not 0.0 <= a <= 1.0 for a in alphas) or len(set(alphas)) != len(alphas)
        ):
            raise ValueError(f"finetune.wise_alphas must be distinct numbers in [0, 1], e.g. [0, 0.5, 1], got {alphas}")
        return self


class ProtocolConfig(_Section):
    """How many trainings a recipe runs and on which splits: one, k folds, repeated splits, or the
    speaker-transfer grid. Each sub-run is a plain run folder inside the run folder, which holds
    summary.json (mean +- std over the sub-runs) and a report with the per-run table."""

    name: Literal["single", "kfold", "repeated_splits", "speaker_transfer"] = Field(
        "single",
        description="'single': one training; 'kfold': k stratified folds (grouped by speaker for speech), "
        "each the test split once; 'repeated_splits': random per-class train/test splits with seeds "
        "seed, seed+1, ...; 'speaker_transfer': pre-train on the source speakers, then adapt to each "
        "target speaker with n utterances per word",
    )
    folds: int = Field(5, ge=2, description="'kfold': number of folds")
    repeats: int = Field(5, ge=1, description="'repeated_splits': number of random splits")
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="'repeated_splits': test fraction of every class")
    split_seed: int | None = Field(None, description="seed of the folds / target pools; null = the run seed")
    target_speakers: list[str] = Field(
        default_factory=list, description="'speaker_transfer': the target speakers (one adaptation grid each)"
    )
    shots: list[int] = Field(
        default_factory=lambda: [1, 5, 10], description="'speaker_transfer': utterances per word of the target"
    )
    held_out: int = Field(
        30, gt=0, description="'speaker_transfer': test utterances per word of the target (never trained on)"
    )
    settings: list[Literal["target_only", "pretrain_finetune"]] = Field(
        default_factory=lambda: ["target_only", "pretrain_finetune"],
        description="'speaker_transfer': train on the target's n utterances from scratch, and/or fine-tune "
        "the model pre-trained on the source speakers",
    )
    finetune_steps: int | None = Field(
        None, gt=0, description="'speaker_transfer': steps of each adaptation run; null = trainer.steps"
    )
    finetune_lr_mult: float = Field(
        0.5, gt=0.0, description="'speaker_transfer': learning rate of fine-tuning = optimizer.lr x this"
    )

    @model_validator(mode="after")
    def _shots_positive(self) -> ProtocolConfig:
        if any(n < 1 for n in self.shots) or len(set(self.shots)) != len(self.shots):
            raise ValueError(f"protocol.shots must be distinct integers >= 1, got {self.shots}")
        if not self.settings:
            raise ValueError("protocol.settings needs at least one of target_only, pretrain_finetune")
        return self


class Config(_Section):
    """A whole experiment."""

    seed: int = Field(0, description="seed of every random number generator")
    device: str = Field("auto", description="'auto' (CUDA if present, else CPU), 'cpu', 'cuda', 'cuda:1', ...")
    deterministic: bool = Field(True, description="use deterministic algorithms where PyTorch has them")
    data: DataConfig = Field(default_factory=DataConfig)
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    protocol: ProtocolConfig = Field(default_factory=ProtocolConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python (JSON/YAML-safe) representation."""
        return self.model_dump(mode="json")


# --------------------------------------------------------------------------------------------
# key introspection


def _is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _section_at(path: Sequence[str]) -> type[BaseModel] | None:
    """The section class at a dotted path (``()`` = Config), or None if the path is not a section."""
    cls: type[BaseModel] = Config
    for part in path:
        field = cls.model_fields.get(part)
        if field is None or not _is_section(field.annotation):
            return None
        cls = field.annotation  # type: ignore[assignment]
    return cls


def config_keys(cls: type[BaseModel] = Config, prefix: str = "") -> Iterator[str]:
    """Every dotted leaf key of the schema, e.g. ``'optimizer.lr'``."""
    for name, field in cls.model_fields.items():
        if _is_section(field.annotation):
            yield from config_keys(field.annotation, f"{prefix}{name}.")  # type: ignore[arg-type]
        else:
            yield f"{prefix}{name}"


def describe_config() -> list[tuple[str, str, str]]:
    """(dotted key, default as YAML, description) for every leaf key; the source of docs/config.md."""
    rows = []
    defaults = Config().to_dict()
    for key in config_keys():
        value: Any = defaults
        for part in key.split("."):
            value = value[part]
        cls = _section_at(key.split(".")[:-1])
        assert cls is not None
        desc = cls.model_fields[key.split(".")[-1]].description or ""
        rows.append((key, yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip(), desc))
    return rows


def _suggest(path: Sequence[str]) -> str:
    """' Did you mean ...?' text for an unknown key at ``path``.

    A close key in the same section wins; a key of a section with ``params`` (data, model, loss)
    that is close to nothing there is most likely a parameter of that section's builder; a
    top-level name is matched against every leaf key (``lr`` -> ``optimizer.lr``).
    """
    parent = _section_at(path[:-1])
    name = path[-1]
    if parent is not None:
        local = closest_match(name, list(parent.model_fields))
        if local is not None:
            return f"; did you mean '{'.'.join([*path[:-1], local])}'?"
    if len(path) == 2 and path[0] in ("data", "model", "loss"):
        return f"; did you mean '{path[0]}.params.{name}' (a parameter of the {path[0]} builder)?"
    keys = list(config_keys())
    leaves = {k.split(".")[-1]: k for k in keys}
    leaf = closest_match(name, list(leaves))
    hint = leaves[leaf] if leaf is not None else closest_match(".".join(path), keys)
    if hint:
        return f"; did you mean '{hint}'?"
    if len(path) == 1:
        return (f"; if it is a parameter of the dataset loader, the model or the loss, write it as "
                f"data.params.{name}, model.params.{name} or loss.params.{name}.")
    return ""


def _unknown_key_message(path: Sequence[str]) -> str:
    key = ".".join(str(p) for p in path)
    parent = _section_at(path[:-1])
    where = ".".join(path[:-1]) or "the top level"
    valid = f" Valid keys in {where}: {', '.join(parent.model_fields)}." if parent is not None else ""
    return f"unknown config key '{key}'{_suggest(path)}{valid}"


def _to_config_error(error: ValidationError) -> ConfigError:
    lines = []
    for item in error.errors():
        loc = [str(p) for p in item["loc"]]
        key = ".".join(loc) or "<config>"
        if item["type"] == "extra_forbidden":
            lines.append(_unknown_key_message(loc))
        else:
            msg = item["msg"].removeprefix("Value error, ")
            lines.append(f"invalid value for config key '{key}' (got {item.get('input')!r}): {msg}")
    if len(lines) == 1:
        return ConfigError(lines[0])
    return ConfigError(f"{len(lines)} config problems:\n  " + "\n  ".join(lines))


# --------------------------------------------------------------------------------------------
# bounded YAML: recipes and run folders may come from anyone

#: the largest config file read (bytes); a recipe is a few KiB
MAX_CONFIG_BYTES = 1 << 20
#: the most YAML aliases (``*name``) in one document: enough for hand-written anchors, far too few
#: for an alias bomb (a few hundred bytes that expand to gigabytes when walked)
MAX_YAML_ALIASES = 64


class _BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` (plain data, no Python tags) that refuses documents with too many aliases."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_YAML_ALIASES:
                raise yaml.YAMLError(f"more than {MAX_YAML_ALIASES} aliases (*name); write the values out instead")
        return super().compose_node(parent, index)


def safe_yaml(text: str) -> Any:
    """Parse YAML text as plain data, with at most :data:`MAX_YAML_ALIASES` aliases."""
    return yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader subclass


# --------------------------------------------------------------------------------------------
# loading, overrides, saving


def _parse_override(override: str) -> tuple[list[str], Any]:
    if "=" not in override:
        raise ConfigError(
            f"config override '{override}' has no '='; write it as key=value, e.g. optimizer.lr=0.001"
        )
    key, raw = override.split("=", 1)
    key = key.strip().removeprefix("--")
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"config override '{override}' has an empty key; write it as key=value")
    try:
        value = safe_yaml(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"config override '{override[:80]}': cannot parse the value as YAML "
            f"({' '.join(str(exc).split())[:160]}); quote strings that contain ':' or brackets"
        ) from exc
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` overrides to a plain config dict (values parsed with ``yaml.safe_load``).

    Unknown keys are reported by validation afterwards; a path through a non-mapping value (e.g.
    ``optimizer.lr.x=1``) is an error here.
    """
    for override in overrides:
        path, value = _parse_override(override)
        node = data
        for i, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ConfigError(
                    f"config override '{override}': '{'.'.join(path[: i + 1])}' is a value, not a "
                    "section, so it has no sub-keys"
                )
            node = child
        node[path[-1]] = value
    return data


def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


def load_config(
    source: str | Path | Mapping[str, Any] | Config | None = None, overrides: Sequence[str] = ()
) -> Config:
    """Build a validated :class:`Config` from a YAML file (or a recipe name), a dict, or an existing Config, then
    apply ``key=value`` overrides (e.g. ``['optimizer.lr=0.001', 'loss.params.margin=0.2']``).

    Keys missing from ``source`` take the schema defaults. Raises :class:`ConfigError` for an
    unknown key (naming the closest valid one), a bad value, or an unreadable file.
    """
    if source is None:
        data: dict[str, Any] = {}
    elif isinstance(source, Config):
        data = source.to_dict()
    elif isinstance(source, Mapping):
        data = _merge({}, source)  # deep copy of nested mappings
    else:
        path = Path(source)
        if not path.exists():  # a recipe name ("demo_omniglot") or recipes/NAME.yaml outside a checkout
            from deepmetric.recipes import find_recipe

            path = find_recipe(path)
        if not path.is_file():
            raise ConfigError(f"config file '{path}' does not exist; check the path")
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(
                f"config file '{path}' is {size:,} bytes, more than a config can be ({MAX_CONFIG_BYTES:,}); "
                "check that it is the right file"
            )
        try:
            loaded = safe_yaml(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            reason = " ".join(str(exc).split())
            raise ConfigError(f"config file '{path}' is not valid YAML: {reason}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"config file '{path}' is not UTF-8 text; check that it is the right file") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(
                f"config file '{path}' must hold a mapping of sections (data:, model:, ...), "
                f"got {type(loaded).__name__}"
            )
        data = loaded
    data = apply_overrides(data, overrides)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise _to_config_error(exc) from None


def config_to_yaml(config: Config) -> str:
    """The config as YAML text, sections in schema order; ``load_config`` reads it back unchanged."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False, default_flow_style=False)


def save_config(config: Config, path: str | Path) -> None:
    """Write the resolved config as YAML, atomically (:func:`deepmetric.atomic_io.atomic_write`)."""
    from deepmetric.atomic_io import atomic_write

    atomic_write(path, lambda handle: handle.write(config_to_yaml(config).encode("utf-8")))
