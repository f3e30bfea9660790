r"""Video-based person re-identification: train a tracklet embedder, evaluate CMC and mAP.

The video re-ID protocol of the OSM+CAA paper (Wang et al., AAAI 2019, arXiv 1811.01459, MARS
experiments; METHODS.md section 1):

* a frame network embeds every frame; temporal pooling (``mean``, or ``attention``: learned
  per-frame quality scores, softmax over the frames) gives the tracklet embedding
  (:class:`~deepmetric.models.temporal.TrackletEmbedder`);
* training draws P identities x K tracklets per batch (:class:`~deepmetric.data.samplers.PKSampler`
  over tracklet identities), T frames per tracklet by restricted random sampling, and minimises

  .. math:: L = w_f \, L_{frame}(\{f_{b,t}\}, \{y_b\}_{t=1..T}) + w_t \, L_{tracklet}(\{g_b\}, \{y_b\})

  where :math:`f_{b,t}` are the frame embeddings (each labelled with its tracklet's identity,
  i.e. labels repeated T times) and :math:`g_b` the pooled tracklet embeddings; both losses are
  any deepmetric loss by name (OSM+CAA by default, each with its own classifier);
* testing embeds EVERY frame of a query/gallery tracklet and pools them all with the model's
  temporal pooling (mean: the mean of all frame embeddings; attention: the learned softmax
  weights over all frames), then ranks the gallery and reports CMC rank-k and mAP with
  same-identity-same-camera and junk exclusion (:func:`~deepmetric.evaluation.reid.evaluate_reid`),
  optionally after k-reciprocal re-ranking (Zhong et al., CVPR 2017).

Datasets (``data.name``): ``mars`` (its train/query/gallery lists), ``market1501`` (image
re-ID, one frame per "tracklet", use ``data.seq_len=1``), and ``prid2011`` / ``ilidsvid`` /
``csv``, split by identity in halves (``data.split_seed``) with the query from camera
``data.query_camera`` and the gallery from the other camera(s).

Command line::

    python -m deepmetric.experiments.video_reid RECIPE.yaml [--out DIR] [key=value ...]

prints (and with ``--out`` writes ``DIR/results.json`` and ``DIR/config.yaml``) the untrained
baseline, the trained model, and the re-ranked trained model.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import Tensor, nn
from torch.utils.data import DataLoader
from torchvision import transforms as T

from deepmetric.config import LossConfig, OptimizerConfig, SamplerConfig, SchedulerConfig, apply_overrides
from deepmetric.data.tracklets import Tracklet, TrackletDataset
from deepmetric.errors import ConfigError, DataError, DeepMetricError, closest_match
from deepmetric.evaluation.reid import evaluate_reid, k_reciprocal_rerank, reid_distance
from deepmetric.models.temporal import TrackletEmbedder

__all__ = [
    "ReIDSplits",
    "VideoReIDConfig",
    "VideoReIDModel",
    "build_reid_model",
    "embed_tracklets",
    "evaluate_tracklets",
    "load_reid_config",
    "load_reid_splits",
    "main",
    "reid_transforms",
    "run_video_reid",
    "train_video_reid",
    "video_reid_loss",
]


# --------------------------------------------------------------------------------------------
# configuration


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


class ReIDDataConfig(_Section):
    """Which re-ID dataset, how frames are sampled and sized."""

    name: Literal["mars", "market1501", "prid2011", "ilidsvid", "csv"] = Field("mars", description="dataset layout")
    root: str | None = Field(None, description="dataset folder (the CSV manifest for 'csv')")
    seq_len: int = Field(8, ge=1, description="frames per training clip (T) and per test chunk")
    height: int = Field(256, ge=8, description="frame height in pixels")
    width: int = Field(128, ge=8, description="frame width in pixels")
    hflip: float = Field(0.5, ge=0.0, le=1.0, description="training horizontal-flip probability")
    pad: int = Field(10, ge=0, description="training random crop after zero-padding by this many pixels")
    min_frames: int = Field(0, ge=0, description="prid2011: keep tracklets with at least this many frames")
    test_fraction: float = Field(0.5, gt=0.0, lt=1.0, description="prid2011/ilidsvid/csv: identities held out")
    split_seed: int = Field(0, description="prid2011/ilidsvid/csv: seed of the identity split (trial)")
    query_camera: int = Field(0, description="prid2011/ilidsvid/csv: camera of the query tracklets")
    num_workers: int = Field(0, ge=0, description="data-loading worker processes")


class ReIDModelConfig(_Section):
    """Frame network (timm backbone + head) and temporal pooling."""

    backbone: str = Field("tf_efficientnet_lite0", description="timm backbone of the frame network")
    pretrained: bool | str = Field("offline", description="'offline', true, false or a weights path")
    embedding_dim: int = Field(128, gt=0, description="frame and tracklet embedding size")
    pooling: str = Field("avg", description="spatial pooling of the backbone feature map")
    temporal: Literal["mean", "attention"] = Field("attention", description="temporal pooling of frames")
    freeze_bn: bool = Field(True, description="freeze BatchNorm statistics of the pretrained backbone")


class ReIDTrainConfig(_Section):
    """Length of training and the weights of the two losses."""

    steps: int = Field(2000, ge=0, description="optimizer steps (0 = evaluate the untrained model only)")
    frame_loss_weight: float = Field(1.0, ge=0.0, description="weight of the frame-level loss (0 = off)")
    tracklet_loss_weight: float = Field(1.0, ge=0.0, description="weight of the tracklet-level loss (0 = off)")
    grad_clip: float | None = Field(None, gt=0.0, description="clip the gradient norm to this value")
    log_every: int = Field(50, gt=0, description="print the loss every this many steps")


class ReIDEvalConfig(_Section):
    """Evaluation protocol."""

    metric: Literal["euclidean", "cosine"] = Field("euclidean", description="query-gallery distance")
    ranks: list[int] = Field(default_factory=lambda: [1, 5, 10, 20], description="CMC ranks")
    rerank: bool = Field(False, description="also report k-reciprocal re-ranking (Zhong et al., CVPR 2017)")
    k1: int = Field(20, gt=0, description="re-ranking k1")
    k2: int = Field(6, gt=0, description="re-ranking k2")
    lambda_value: float = Field(0.3, ge=0.0, le=1.0, description="re-ranking weight of the original distance")
    baseline: bool = Field(True, description="also evaluate the untrained (pretrained-features) model")
    batch_size: int = Field(256, gt=0, description="frames per forward pass when embedding")


class VideoReIDConfig(_Section):
    """A video re-ID experiment (see the module docstring)."""

    seed: int = Field(0, description="seed of every random number generator")
    device: str = Field("auto", description="'auto', 'cpu', 'cuda', ...")
    data: ReIDDataConfig = Field(default_factory=ReIDDataConfig)
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    model: ReIDModelConfig = Field(default_factory=ReIDModelConfig)
    frame_loss: LossConfig = Field(default_factory=lambda: LossConfig(name="osm_caa"))
    tracklet_loss: LossConfig = Field(default_factory=lambda: LossConfig(name="osm_caa"))
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    train: ReIDTrainConfig = Field(default_factory=ReIDTrainConfig)
    eval: ReIDEvalConfig = Field(default_factory=ReIDEvalConfig)


def _section_fields(path: Sequence[str]) -> dict[str, Any] | None:
    cls: type[BaseModel] = VideoReIDConfig
    for part in path:
        field = cls.model_fields.get(part)
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return None
        cls = field.annotation
    return dict(cls.model_fields)


def _leaf_keys(cls: type[BaseModel] = VideoReIDConfig, prefix: str = "") -> list[str]:
    keys = []
    for name, field in cls.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            keys += _leaf_keys(field.annotation, f"{prefix}{name}.")
        else:
            keys.append(prefix + name)
    return keys


def _config_error(error: ValidationError) -> ConfigError:
    lines = []
    for item in error.errors():
        loc = [str(p) for p in item["loc"]]
        key = ".".join(loc)
        if item["type"] == "extra_forbidden":
            fields = _section_fields(loc[:-1]) or {}
            local = closest_match(loc[-1], fields)
            if local is not None:
                hint: str | None = ".".join([*loc[:-1], local])
            else:
                leaves = {k.split(".")[-1]: k for k in _leaf_keys()}
                leaf = closest_match(loc[-1], leaves)
                hint = leaves[leaf] if leaf else closest_match(key, _leaf_keys())
            did = f"; did you mean '{hint}'?" if hint else ""
            where = ".".join(loc[:-1]) or "the top level"
            lines.append(f"unknown config key '{key}'{did} Valid keys in {where}: {', '.join(fields)}.")
        else:
            msg = item["msg"].removeprefix("Value error, ")
            lines.append(f"invalid value for config key '{key}' (got {item.get('input')!r}): {msg}")
    return ConfigError(lines[0] if len(lines) == 1 else f"{len(lines)} config problems:\n  " + "\n  ".join(lines))


def load_reid_config(
    source: str | Path | dict[str, Any] | None = None, overrides: Sequence[str] = ()
) -> VideoReIDConfig:
    """A validated :class:`VideoReIDConfig` from a YAML file or dict plus ``key=value`` overrides.

    Unknown keys raise :class:`ConfigError` naming the closest valid key.
    """
    if source is None:
        data: dict[str, Any] = {}
    elif isinstance(source, dict):
        data = json.loads(json.dumps(source))
    else:
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"config file '{path}' does not exist; check the path")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file '{path}' is not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"config file '{path}' must hold a mapping of sections (data:, model:, ...)")
    data = apply_overrides(data, overrides)
    try:
        return VideoReIDConfig.model_validate(data)
    except ValidationError as exc:
        raise _config_error(exc) from None


# --------------------------------------------------------------------------------------------
# data


@dataclass
class ReIDSplits:
    """Training tracklets and the query / gallery tracklets of the test identities."""

    train: list[Tracklet]
    query: list[Tracklet]
    gallery: list[Tracklet]


def query_gallery_by_camera(tracklets: Sequence[Tracklet], query_camera: int) -> tuple[list[Tracklet], list[Tracklet]]:
    """Query = tracklets of ``query_camera``, gallery = the rest (two-camera datasets: PRID2011,
    iLIDS-VID, where the usual protocol queries camera A and searches camera B)."""
    query = [t for t in tracklets if t.camera == query_camera]
    gallery = [t for t in tracklets if t.camera != query_camera]
    if not query or not gallery:
        cams = sorted({t.camera for t in tracklets})
        raise DataError(f"query camera {query_camera} leaves an empty query or gallery; the cameras are {cams}")
    return query, gallery


def load_reid_splits(config: ReIDDataConfig) -> ReIDSplits:
    """Train / query / gallery tracklets for ``config.name`` (see the module docstring)."""
    from deepmetric.data import tracklets as tk

    if config.root is None:
        raise ConfigError(f"data.root is not set; point it at the {config.name} dataset folder")
    if config.name == "mars":
        return ReIDSplits(*(tk.mars_tracklets(config.root, s) for s in ("train", "query", "gallery")))
    if config.name == "market1501":
        from deepmetric.data.market1501 import market1501_tracklets

        return ReIDSplits(*(market1501_tracklets(config.root, s) for s in ("train", "query", "gallery")))
    if config.name == "prid2011":
        everything = tk.prid2011_tracklets(config.root, min_frames=config.min_frames)
    elif config.name == "ilidsvid":
        everything = tk.ilidsvid_tracklets(config.root)
    else:
        everything = tk.csv_tracklets(config.root)
    # the PRID2011 / iLIDS-VID protocol uses the people seen by both cameras
    cams: dict[int, set[int]] = {}
    for t in everything:
        cams.setdefault(t.person, set()).add(t.camera)
    everything = [t for t in everything if len(cams[t.person]) > 1]
    if not everything:
        raise DataError(f"no person of {config.root} is seen by two cameras; cross-camera re-ID needs some")
    train, test = tk.split_identities(everything, config.test_fraction, config.split_seed)
    return ReIDSplits(train, *query_gallery_by_camera(test, config.query_camera))


def reid_transforms(
    height: int, width: int, mean: Sequence[float], std: Sequence[float], hflip: float = 0.5, pad: int = 10
) -> tuple[Callable[[Image.Image], Tensor], Callable[[Image.Image], Tensor]]:
    """(train, eval) frame transforms: resize to ``height x width``; for training also a random
    horizontal flip and a random crop after zero-padding by ``pad`` (the usual re-ID
    augmentation); normalise with the backbone's ``mean``/``std``."""
    norm = [T.ToTensor(), T.Normalize(list(mean), list(std))]
    train: list[Any] = [T.Resize((height, width))]
    if hflip > 0:
        train.append(T.RandomHorizontalFlip(hflip))
    if pad > 0:
        train.append(T.RandomCrop((height, width), padding=pad))
    return T.Compose(train + norm), T.Compose([T.Resize((height, width)), *norm])


# --------------------------------------------------------------------------------------------
# model, loss, training


class VideoReIDModel(TrackletEmbedder):
    """:class:`TrackletEmbedder` exposing ``backbone_parameters`` of its frame network, so the
    optimizer (:func:`deepmetric.training.optim.build_optimizer`) gives the backbone its own
    learning-rate multiplier; everything else (frame head, temporal attention) is "head"."""

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        if hasattr(self.frame_model, "backbone_parameters"):
            return self.frame_model.backbone_parameters()
        return iter(())


def build_reid_model(config: ReIDModelConfig, height: int, width: int) -> VideoReIDModel:
    """Frame :class:`~deepmetric.models.embedder.Embedder` (L2-normalised frames) + temporal pooling."""
    from deepmetric.models import create_embedder

    frame = create_embedder(
        config.backbone, pretrained=config.pretrained, embedding_dim=config.embedding_dim,
        pooling=config.pooling, normalize=True, image_size=max(height, width), freeze_bn=config.freeze_bn,
    )
    return VideoReIDModel(frame, frame.embedding_dim, mode=config.temporal, normalize=True)


def video_reid_loss(
    tracklet_emb: Tensor, frame_embs: Tensor, labels: Tensor, frame_loss: nn.Module | None,
    tracklet_loss: nn.Module | None, frame_weight: float = 1.0, tracklet_weight: float = 1.0,
) -> tuple[Tensor, dict[str, float]]:
    """``frame_weight * frame_loss(frames (B*T, D), labels repeated T times)
    + tracklet_weight * tracklet_loss(tracklets (B, D), labels)``; a ``None`` loss is left out.
    Returns the total and its parts (floats, for logging)."""
    b, t = frame_embs.shape[:2]
    total = tracklet_emb.new_zeros(())
    parts: dict[str, float] = {}
    if frame_loss is not None and frame_weight > 0:
        value = frame_loss(frame_embs.reshape(b * t, -1), labels.repeat_interleave(t))
        total = total + frame_weight * value
        parts["frame_loss"] = float(value.detach())
    if tracklet_loss is not None and tracklet_weight > 0:
        value = tracklet_loss(tracklet_emb, labels)
        total = total + tracklet_weight * value
        parts["tracklet_loss"] = float(value.detach())
    return total, parts


def _build_loss(config: LossConfig, weight: float, num_classes: int, dim: int) -> nn.Module | None:
    from deepmetric.training.builders import build_loss_from_config

    return build_loss_from_config(config, num_classes, dim) if weight > 0 else None


def train_video_reid(
    model: VideoReIDModel, train_set: TrackletDataset, config: VideoReIDConfig, device: torch.device,
    log: Callable[[str], None] | None = print,
) -> list[dict[str, float]]:
    """Train ``model`` in place for ``config.train.steps`` P x K steps; returns the logged rows."""
    from deepmetric.data.samplers import PKSampler
    from deepmetric.training.optim import build_optimizer
    from deepmetric.training.schedule import apply_lr, lr_factor

    tc = config.train
    if tc.steps == 0:
        return []
    if tc.frame_loss_weight == 0 and tc.tracklet_loss_weight == 0:
        raise ConfigError("both train.frame_loss_weight and train.tracklet_loss_weight are 0; set one > 0")
    num_classes = len(set(train_set.labels))
    dim = int(getattr(model.frame_model, "embedding_dim", config.model.embedding_dim))
    frame_loss = _build_loss(config.frame_loss, tc.frame_loss_weight, num_classes, dim)
    tracklet_loss = _build_loss(config.tracklet_loss, tc.tracklet_loss_weight, num_classes, dim)
    losses = nn.ModuleList([m for m in (frame_loss, tracklet_loss) if m is not None]).to(device)
    optimizer = build_optimizer(model, losses, config.optimizer)
    sampler = PKSampler(
        train_set.labels, config.sampler.p, config.sampler.k, seed=config.seed,
        small_class_policy=config.sampler.small_class_policy,
    )
    loader = DataLoader(train_set, batch_sampler=sampler, num_workers=config.data.num_workers)
    model.train()
    losses.train()
    rows, step, epoch, start = [], 0, 0, time.time()
    while step < tc.steps:
        sampler.set_epoch(epoch)
        for clips, labels in loader:
            if step >= tc.steps:
                break
            apply_lr(optimizer, lr_factor(step, tc.steps, config.scheduler))
            clips, labels = clips.to(device), labels.to(device)
            tracklet_emb, frame_embs = model(clips)
            loss, parts = video_reid_loss(
                tracklet_emb, frame_embs, labels, frame_loss, tracklet_loss,
                tc.frame_loss_weight, tc.tracklet_loss_weight,
            )
            if not torch.isfinite(loss):
                raise DeepMetricError(f"the loss became {float(loss)} at step {step}; lower optimizer.lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if tc.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], tc.grad_clip)
            optimizer.step()
            step += 1
            if step % tc.log_every == 0 or step == tc.steps:
                row = {"step": float(step), "loss": float(loss.detach()), **parts}
                rows.append(row)
                if log is not None:
                    log(f"step {step}/{tc.steps} loss {row['loss']:.4f} ({time.time() - start:.0f} s)")
        epoch += 1
    return rows


# --------------------------------------------------------------------------------------------
# evaluation


@torch.inference_mode()
def embed_tracklets(model: TrackletEmbedder, dataset: TrackletDataset, batch_size: int = 256) -> Tensor:
    """Tracklet embeddings ``(N, D)`` (float32, CPU) from ALL frames of each tracklet.

    ``dataset`` is in ``mode="test"``: its chunks ``(n_chunks, T, C, H, W)`` are flattened, the
    repeated padding frames of the last chunk dropped (the first ``len(frames)`` entries are the
    frames in order), every frame embedded by ``model.frame_model`` (``batch_size`` frames per
    pass), and the ``len(frames)`` frame embeddings pooled at once by ``model.pool`` (mean: the
    mean of all frames; attention: softmax of the learned scores over all frames), then
    L2-normalised when ``model.normalize``. The model's train/eval mode is restored afterwards.
    """
    if dataset.mode != "test":
        raise DataError("embed_tracklets needs a TrackletDataset in mode='test' (every frame, in chunks)")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    try:
        for index in range(len(dataset)):
            chunks, _ = dataset[index]
            frames = chunks.flatten(0, 1)[: len(dataset.tracklets[index].frames)]
            embs = torch.cat([
                model.frame_model(frames[s:s + batch_size].to(device)) for s in range(0, len(frames), batch_size)
            ])
            pooled = model.pool(embs.unsqueeze(0))
            out.append(torch.nn.functional.normalize(pooled, dim=1) if model.normalize else pooled)
    finally:
        model.train(was_training)
    return torch.cat(out).float().cpu()


def evaluate_tracklets(
    model: TrackletEmbedder, query: TrackletDataset, gallery: TrackletDataset, config: ReIDEvalConfig
) -> dict[str, dict[str, float]]:
    """``{"plain": metrics}`` (and ``"rerank"`` when ``config.rerank``) where metrics are CMC at
    ``config.ranks`` and mAP under the Market-1501 / MARS protocol (same identity AND same camera
    excluded, identity -1 junk); identities are the ORIGINAL person ids, not training labels."""
    q, g = embed_tracklets(model, query, config.batch_size), embed_tracklets(model, gallery, config.batch_size)
    ids = (query.persons, gallery.persons, query.cameras, gallery.cameras)
    results = {"plain": evaluate_reid(reid_distance(q, g, config.metric), *ids, ranks=config.ranks)}
    if config.rerank:
        dist = k_reciprocal_rerank(q, g, config.k1, config.k2, config.lambda_value)
        results["rerank"] = evaluate_reid(dist, *ids, ranks=config.ranks)
    return results


# --------------------------------------------------------------------------------------------
# experiment


def run_video_reid(
    config: VideoReIDConfig, splits: ReIDSplits | None = None, out_dir: str | Path | None = None,
    log: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Train and evaluate one video re-ID model.

    ``splits`` replaces the dataset named by ``config.data`` (e.g. in-memory tracklets). Returns
    ``{"baseline": {...}, "trained": {...}, "train_log": [...], "seconds": ...}`` where each
    evaluation is :func:`evaluate_tracklets`' dict; with ``out_dir`` also writes ``results.json``
    and the resolved ``config.yaml`` there.
    """
    from deepmetric.training.seed import resolve_device, seed_everything

    start = time.time()
    seed_everything(config.seed)
    device = resolve_device(config.device)
    splits = splits if splits is not None else load_reid_splits(config.data)
    dc = config.data
    model = build_reid_model(config.model, dc.height, dc.width).to(device)
    frame_net = model.frame_model
    train_tf, eval_tf = reid_transforms(dc.height, dc.width, frame_net.mean, frame_net.std, dc.hflip, dc.pad)
    query = TrackletDataset(splits.query, eval_tf, dc.seq_len, mode="test")
    gallery = TrackletDataset(splits.gallery, eval_tf, dc.seq_len, mode="test")
    results: dict[str, Any] = {}
    if config.eval.baseline:
        results["baseline"] = evaluate_tracklets(model, query, gallery, config.eval)
        if log is not None:
            log(f"untrained: {_summary(results['baseline']['plain'])}")
    train_set = TrackletDataset(splits.train, train_tf, dc.seq_len, mode="train", seed=config.seed)
    results["train_log"] = train_video_reid(model, train_set, config, device, log)
    results["trained"] = evaluate_tracklets(model, query, gallery, config.eval)
    results["seconds"] = time.time() - start
    if log is not None:
        for name, metrics in results["trained"].items():
            log(f"trained ({name}): {_summary(metrics)}")
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(results, indent=2))
        (out / "config.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    return results


def _summary(metrics: dict[str, float]) -> str:
    cmc = " ".join(f"CMC-{k.split('@')[1]} {100 * v:.1f}" for k, v in metrics.items() if k.startswith("cmc@"))
    return f"{cmc} mAP {100 * metrics['map']:.1f}"


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="python -m deepmetric.experiments.video_reid", description=__doc__.split("\n")[0]
    )
    parser.add_argument("recipe", help="YAML recipe (e.g. recipes/reid_mars.yaml)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.steps=100")
    parser.add_argument("--out", default=None, help="folder for results.json and config.yaml")
    args = parser.parse_args(argv)
    try:
        config = load_reid_config(args.recipe, args.overrides)
        run_video_reid(config, out_dir=args.out)
    except DeepMetricError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
