"""Scene classification over repeated random train/test splits (remote-sensing protocol).

The protocol of Gong et al., Remote Sensing 11(1):76, 2019 (METHODS.md section 4): a random
per-class train/test split (e.g. 80/20) of a folder-per-class image set, repeated over several
seeds; overall accuracy reported as mean +- std, with per-class accuracy and the confusion matrix.
Works for any folder-per-class dataset loaded by the ``folder`` (``split_by=items``) or the
``scene_folder`` loader (:mod:`deepmetric.data.scene_split`, split seed of its own, optional
per-class cap).

For split ``s`` (seed ``config.seed + s``, or ``seeds[s]``):

1. the config is copied with the split selected (:func:`split_config`): ``scene_folder`` gets
   ``data.params.split_seed`` and ``test_fraction``; ``folder`` gets ``split_by=items`` and
   ``test_fraction`` and splits with the run seed. The run seed is the split seed too;
2. :func:`deepmetric.training.fit` trains it into ``out_dir/split_<s>/`` (validation carved from
   the training ITEMS, ``data.val_by=items``; the checkpoint is chosen there, never on test);
3. the test split is predicted from the chosen checkpoint (``checkpoint="best"``, or ``"last"``
   for the final weights) by every trained head of the loss (:func:`prediction_heads`):

   * ``softmax``: argmax of the loss's ``logits`` (the classifier head of
     :class:`~deepmetric.losses.center_structured.CenterStructuredLoss`, of
     :class:`~deepmetric.losses.classification.Hybrid` (``loss.ce_weight > 0``) or of
     :class:`~deepmetric.losses.classification.NormalizedSoftmaxLoss`);
   * ``nearest_center``: ``predict_nearest_center`` (Euclidean nearest learned class center),
     when the loss has centers that training moved (a center-structured loss whose structured
     and center terms are both off has random centers: that head is reported as unavailable);

4. ``split_<s>/classification_report.json`` holds one
   :func:`~deepmetric.evaluation.classification.classification_report` per head (accuracy,
   per-class accuracy, confusion matrix), and ``split_<s>/test_predictions.npz`` (``labels``,
   ``predictions``, ``class_names``; the softmax head, else the nearest center) is what the run
   report (:mod:`deepmetric.evaluation.report`) draws its confusion matrix from.

Finally ``out_dir/summary.json`` and ``out_dir/summary.md`` give, per head, accuracy mean +- std
(sample std, ddof = 1, over the splits), the mean per-class accuracy, per-class accuracy
mean +- std and the confusion matrix summed over the splits (``out_dir/confusion_<head>.png``).

A split whose ``classification_report.json`` exists is reused; a split folder with an
unfinished run (``checkpoints/last.pt`` but no test embeddings) is resumed. So an interrupted
experiment continues where it stopped when run again with the same arguments.

Command line::

    python -m deepmetric.experiments.scene_classification RECIPE.yaml --splits 3 \\
        --test-fraction 0.2 [--out DIR] [--checkpoint best|last] [key=value ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from deepmetric.config import Config, load_config
from deepmetric.errors import ConfigError, DataError
from deepmetric.evaluation.classification import classification_report, summarize_repeats
from deepmetric.experiments.common import check_same_config as _check_same_config
from deepmetric.experiments.common import classifier_trained as _classifier_trained
from deepmetric.experiments.common import unwrap_loss as _unwrap

__all__ = [
    "HEADS",
    "main",
    "prediction_heads",
    "predict_split",
    "run_repeated_splits",
    "split_config",
    "summarize_splits",
]

#: prediction heads, in report order
HEADS = ("softmax", "nearest_center")

REPORT_FILE = "classification_report.json"
PREDICTIONS_FILE = "test_predictions.npz"
SPLIT_LOADERS = ("folder", "scene_folder")


# --------------------------------------------------------------------------------------------
# configuration of one split


def split_config(config: Config, seed: int, test_fraction: float) -> Config:
    """``config`` with the per-class train/test split of seed ``seed`` selected.

    ``config.seed`` becomes ``seed``; ``scene_folder`` also gets ``data.params.split_seed=seed``
    and ``test_fraction``; ``folder`` gets ``split_by=items`` and ``test_fraction`` (it splits
    with the run seed). Raises :class:`ConfigError` for another loader, a folder with a fixed
    ``train/``+``test/`` layout, a validation split carved from whole classes, or a fraction
    outside (0, 1).
    """
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"test_fraction must be in (0, 1), got {test_fraction}; use 0.2 (the 80/20 protocol)")
    name = config.data.name
    if name not in SPLIT_LOADERS:
        raise ConfigError(
            f"repeated random splits need a folder-per-class dataset loaded by data.name=folder or "
            f"scene_folder, got '{name}'; set data.name=scene_folder and data.root=<folder with one "
            "sub-folder per class>"
        )
    if config.data.val_by != "items" and config.data.val_fraction > 0:
        raise ConfigError(
            "scene classification needs every class in training, but data.val_by=classes holds "
            "whole classes out for validation; set data.val_by=items"
        )
    params = dict(config.data.params)
    if name == "folder":
        root = Path(config.data.root or ".").expanduser()
        if (root / "train").is_dir() and (root / "test").is_dir():
            raise ConfigError(
                f"{root} has fixed train/ and test/ folders, so the folder loader ignores the split "
                "seed; point data.root at a folder with one sub-folder per class"
            )
        params.update(split_by="items", test_fraction=float(test_fraction))
    else:
        params.update(split_seed=int(seed), test_fraction=float(test_fraction))
    data = config.data.model_copy(update={"params": params})
    return config.model_copy(update={"seed": int(seed), "data": data})


# --------------------------------------------------------------------------------------------
# prediction heads


def _centers_trained(part: nn.Module) -> bool:
    """Centers move under EMA updates, or when the structured or the center term is on."""
    return (
        getattr(part, "center_update", "sgd") == "ema"
        or (bool(getattr(part, "use_structured", True)) and float(getattr(part, "lam_s", 1.0)) > 0)
        or (bool(getattr(part, "use_center", True)) and float(getattr(part, "lam_c", 1.0)) > 0)
    )


def prediction_heads(loss: nn.Module) -> tuple[dict[str, Callable[[Tensor], Tensor]], dict[str, str]]:
    """``({head: embeddings -> predicted class}, {head: why it is unavailable})``.

    The loss and the losses it wraps (``Hybrid.metric_loss``, ``SymmetricalSynthesis.base_loss``)
    are searched from the outside in:

    * ``softmax``: ``logits(e).argmax(1)`` of the first one with a trained classifier (a
      :class:`CenterStructuredLoss` with ``use_ce`` off or ``ce_weight`` 0 has a random head,
      which does not count);
    * ``nearest_center``: ``predict_nearest_center`` of the first one with trained centers (the
      structured or the center term on, or ``center_update="ema"``).
    """
    heads: dict[str, Callable[[Tensor], Tensor]] = {}
    missing: dict[str, str] = {}
    for part in _unwrap(loss):
        name = type(part).__name__
        if "softmax" not in heads and callable(getattr(part, "logits", None)):
            if _classifier_trained(part):
                heads["softmax"] = lambda e, p=part: p.logits(e).argmax(dim=1)
            else:
                missing.setdefault(
                    "softmax", f"the classifier head of {name} is not trained (use_ce off or ce_weight 0)"
                )
        if "nearest_center" not in heads and callable(getattr(part, "predict_nearest_center", None)):
            if _centers_trained(part):
                heads["nearest_center"] = lambda e, p=part: p.predict_nearest_center(e)
            else:
                missing.setdefault(
                    "nearest_center", f"the centers of {name} are not trained (structured and center terms off)"
                )
    default = {"softmax": "no classifier (logits)", "nearest_center": "no class centers"}
    for head in HEADS:
        if head in heads:
            missing.pop(head, None)
        else:
            missing.setdefault(head, f"{type(loss).__name__} has {default[head]}")
    return heads, missing


def _check_has_head(config: Config, num_classes: int, embedding_dim: int) -> None:
    from deepmetric.training.builders import build_loss_from_config

    heads, missing = prediction_heads(build_loss_from_config(config.loss, num_classes, embedding_dim))
    if not heads:
        raise ConfigError(
            f"loss '{config.loss.name}' predicts no class: {'; '.join(missing.values())}. Use "
            "loss.name=center_structured, loss.name=normalized_softmax, or add a classifier with "
            "loss.ce_weight=1"
        )


# --------------------------------------------------------------------------------------------
# one split


def _dataset_splits(config: Config, model: nn.Module | None = None) -> Any:
    """Train/val/test datasets of ``config`` (without a model: no transforms; no image is read)."""
    from deepmetric.training.builders import build_datasets

    return build_datasets(config, model if model is not None else nn.Identity())


def _class_names(splits: Any) -> list[str]:
    train_names = list(splits.train.class_names or [])
    test_names = list(getattr(splits.test, "class_names", None) or [])
    identity = all(k == v for k, v in splits.train.label_map.items())
    if not train_names or train_names != test_names or not identity:
        raise DataError(
            f"the train split has classes {train_names} but the test split {test_names}; every "
            "class needs images on both sides (at least 2 images per class)"
        )
    return train_names


def _embeddings_of(
    run_dir: Path, checkpoint: str, device: str
) -> tuple[Tensor, Tensor, list[str], int, nn.Module]:
    """(test embeddings, labels, paths, checkpoint step, loss) of ``run_dir``'s chosen checkpoint."""
    from deepmetric.training import RunPaths, embed, load_checkpoint, load_trained
    from deepmetric.training.builders import build_loss_from_config

    paths = RunPaths(run_dir)
    config = load_config(paths.config)
    metrics = json.loads(paths.metrics.read_text(encoding="utf-8"))
    best_step = int(metrics.get("test_step", metrics.get("steps", 0)))
    if checkpoint == "best" or best_step == int(metrics["steps"]):
        state = load_checkpoint(paths.best if paths.best.is_file() else paths.last)
        with np.load(paths.test_embeddings, allow_pickle=False) as npz:
            emb = torch.from_numpy(npz["embeddings"]).float()
            labels = torch.from_numpy(npz["labels"]).long()
            item_paths = [str(p) for p in npz["paths"]]
        loss = build_loss_from_config(config.loss, int(state["num_classes"]), int(emb.shape[1]))
        loss.load_state_dict(state["loss"])
        return emb, labels, item_paths, best_step, loss
    model, loss, config = load_trained(run_dir, "last", device=device)
    test = _dataset_splits(config, model).test
    emb, labels = embed(model, test, batch_size=config.eval.batch_size, device=device)
    loss.to("cpu")
    return emb, labels, [str(p) for p in test.paths], int(metrics["steps"]), loss


def predict_split(
    run_dir: str | Path, class_names: Sequence[str], checkpoint: str = "best", device: str = "cpu"
) -> dict[str, Any]:
    """Classification report of every trained head on the test split of the run in ``run_dir``.

    Writes ``run_dir/classification_report.json`` and ``run_dir/test_predictions.npz``; returns
    the report: ``{"checkpoint", "checkpoint_step", "num_test", "test_paths", "heads": {head:
    classification_report}, "unavailable": {head: reason}, "retrieval": metrics.json test}``.
    """
    from deepmetric.training.checkpoint import write_json

    if checkpoint not in ("best", "last"):
        raise ConfigError(f"checkpoint must be 'best' or 'last', got '{checkpoint}'")
    run_dir = Path(run_dir)
    emb, labels, item_paths, step, loss = _embeddings_of(run_dir, checkpoint, device)
    loss.eval()
    heads, missing = prediction_heads(loss)
    reports: dict[str, Any] = {}
    predictions: dict[str, np.ndarray] = {}
    with torch.no_grad():
        for head in HEADS:
            if head in heads:
                pred = heads[head](emb).cpu().numpy().astype(np.int64)
                predictions[head] = pred
                reports[head] = classification_report(labels.numpy(), pred, class_names)
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    report = {
        "checkpoint": checkpoint,
        "checkpoint_step": step,
        "num_test": int(labels.numel()),
        "heads": reports,
        "unavailable": missing,
        "retrieval": metrics.get("test_last", metrics.get("test")) if checkpoint == "last" else metrics.get("test"),
        "test_paths": item_paths,
    }
    if step == 0:
        report["warning"] = (
            "the chosen checkpoint is the untrained network (step 0): its classifier head and centers "
            "are random; train longer or use checkpoint='last'"
        )
    write_json(report, run_dir / REPORT_FILE)
    main_head = "softmax" if "softmax" in predictions else "nearest_center"
    extra = {f"predictions_{h}": p for h, p in predictions.items()}
    np.savez(
        run_dir / PREDICTIONS_FILE,
        labels=labels.numpy().astype(np.int64),
        predictions=predictions[main_head],
        class_names=np.asarray(list(class_names), dtype=str),
        **extra,
    )
    return report


# --------------------------------------------------------------------------------------------
# summary


def summarize_splits(reports: Sequence[dict[str, Any]], class_names: Sequence[str]) -> dict[str, Any]:
    """Per head: accuracy / mean per-class accuracy mean +- std (ddof = 1) and per-split values,
    per-class accuracy mean +- std, confusion matrix summed over the splits."""
    heads: dict[str, Any] = {}
    for head in HEADS:
        per = [r["heads"][head] for r in reports if head in r.get("heads", {})]
        if not per:
            continue
        stats = summarize_repeats(per)
        entry: dict[str, Any] = {"n_splits": len(per)}
        for key in ("accuracy", "mean_per_class_accuracy"):
            mean, std = stats[key]
            entry[key] = {"mean": mean, "std": std, "values": [float(p[key]) for p in per]}
        entry["per_class_accuracy"] = {
            name: {"mean": stats[f"per_class_accuracy/{name}"][0], "std": stats[f"per_class_accuracy/{name}"][1]}
            for name in class_names if f"per_class_accuracy/{name}" in stats
        }
        entry["confusion_matrix"] = np.sum([np.asarray(p["confusion_matrix"]) for p in per], axis=0).tolist()
        heads[head] = entry
    return heads


def _pct(stat: dict[str, float]) -> str:
    return f"{100 * stat['mean']:.2f} +- {100 * stat['std']:.2f}"


def summary_markdown(summary: dict[str, Any]) -> str:
    """The summary as a Markdown page (tables of accuracy and per-class accuracy)."""
    lines = [
        f"# Scene classification: {summary['n_splits']} random splits, test fraction {summary['test_fraction']}",
        "",
        f"Split seeds {summary['split_seeds']}; checkpoint: {summary['checkpoint']} (chosen on the validation "
        "items of the training split). Accuracy in %, mean +- sample std over the splits.",
        "",
        "| head | accuracy | mean per-class accuracy | per split |",
        "|---|---|---|---|",
    ]
    for head, entry in summary["heads"].items():
        values = ", ".join(f"{100 * v:.2f}" for v in entry["accuracy"]["values"])
        lines.append(f"| {head} | {_pct(entry['accuracy'])} | {_pct(entry['mean_per_class_accuracy'])} | {values} |")
    for head, why in summary.get("unavailable", {}).items():
        lines.append(f"| {head} | - | - | unavailable: {why} |")
    names = summary["class_names"]
    heads = list(summary["heads"])
    if heads:
        lines += ["", "Per-class accuracy (%):", "", "| class | " + " | ".join(heads) + " |",
                  "|---|" + "---|" * len(heads)]
        for name in names:
            cells = []
            for head in heads:
                stat = summary["heads"][head]["per_class_accuracy"].get(name)
                cells.append(_pct(stat) if stat else "-")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        for head in heads:
            title = f"Confusion matrix, {head} head, summed over the splits (rows true, columns predicted):"
            lines += ["", title, "",
                      "| true \\ pred | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
            for name, row in zip(names, summary["heads"][head]["confusion_matrix"]):
                lines.append(f"| {name} | " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def _plot_confusions(summary: dict[str, Any], out_dir: Path) -> dict[str, str]:
    try:
        from deepmetric.evaluation.plots import plot_confusion_matrix
    except ImportError:  # matplotlib missing: the JSON/Markdown still hold the matrices
        return {}
    made = {}
    for head, entry in summary["heads"].items():
        path = plot_confusion_matrix(np.asarray(entry["confusion_matrix"]), out_dir / f"confusion_{head}.png",
                                     summary["class_names"])
        made[head] = Path(path).name
    return made


# --------------------------------------------------------------------------------------------
# the experiment


def _finished(run_dir: Path) -> bool:
    return (run_dir / "test_embeddings.npz").is_file() and (run_dir / "metrics.json").is_file() and (
        "test" in json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    )


def run_repeated_splits(
    config: Config | str | Path | dict[str, Any],
    n_splits: int,
    test_fraction: float,
    out_dir: str | Path,
    seeds: Sequence[int] | None = None,
    checkpoint: str = "best",
    progress: bool = False,
) -> dict[str, Any]:
    """Train and evaluate ``config`` on ``n_splits`` random per-class train/test splits.

    Args:
        config: a :class:`Config` (or a YAML path / dict for :func:`load_config`) whose dataset
            is ``folder`` or ``scene_folder``.
        n_splits: number of random splits (>= 1).
        test_fraction: fraction of every class's images in the test split (0.2 = 80/20).
        out_dir: experiment folder: ``split_<s>/`` (run folders), ``summary.json``,
            ``summary.md``, ``confusion_<head>.png``.
        seeds: the split seeds; default ``config.seed + s`` for ``s = 0 .. n_splits - 1``.
        checkpoint: ``"best"`` (chosen on validation, the default) or ``"last"`` (final weights).
        progress: show training progress bars.

    Returns:
        The ``summary.json`` content: ``{"n_splits", "test_fraction", "split_seeds",
        "checkpoint", "class_names", "heads": {head: {"accuracy": {"mean", "std", "values"},
        "mean_per_class_accuracy": {...}, "per_class_accuracy": {class: {"mean", "std"}},
        "confusion_matrix"}}, "unavailable": {head: reason}, "splits": [per-split summary]}``.
    """
    from deepmetric.training import fit
    from deepmetric.training.checkpoint import write_json
    from deepmetric.training.run_folder import RunPaths

    if not isinstance(config, Config):
        config = load_config(config)
    if int(n_splits) < 1:
        raise ConfigError(f"n_splits must be >= 1, got {n_splits}")
    if checkpoint not in ("best", "last"):
        raise ConfigError(f"checkpoint must be 'best' or 'last', got '{checkpoint}'")
    seeds = [config.seed + s for s in range(int(n_splits))] if seeds is None else [int(s) for s in seeds]
    if len(seeds) != int(n_splits) or len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds must be {n_splits} distinct integers, got {seeds}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    reports: list[dict[str, Any]] = []
    class_names: list[str] = []
    split_rows: list[dict[str, Any]] = []
    for s, seed in enumerate(seeds):
        cfg = split_config(config, seed, test_fraction)
        splits = _dataset_splits(cfg)
        names = _class_names(splits)
        if class_names and names != class_names:
            raise DataError(f"split {s} has classes {names}, split 0 had {class_names}; the dataset changed")
        class_names = names
        if s == 0:
            _check_has_head(cfg, len(names), cfg.model.embedding_dim)
        run_dir = out / f"split_{s}"
        _check_same_config(run_dir, cfg)
        report_path = run_dir / REPORT_FILE
        saved = json.loads(report_path.read_text(encoding="utf-8")) if report_path.is_file() else None
        if saved is not None and saved.get("checkpoint") == checkpoint:
            report = saved
        else:
            if not _finished(run_dir):
                fit(cfg, run_dir, resume=RunPaths(run_dir).last.is_file(), progress=progress)
            report = predict_split(run_dir, names, checkpoint=checkpoint)
        reports.append(report)
        split_rows.append({
            "split": s, "seed": seed, "run_dir": str(run_dir), "num_train": len(splits.train),
            "num_val": len(splits.val) if splits.val is not None else 0, "num_test": len(splits.test),
            "checkpoint_step": report["checkpoint_step"],
            **{f"{h}_accuracy": r["accuracy"] for h, r in report["heads"].items()},
        })
    unavailable = dict(reports[0].get("unavailable", {}))
    summary: dict[str, Any] = {
        "n_splits": len(seeds),
        "test_fraction": float(test_fraction),
        "split_seeds": seeds,
        "checkpoint": checkpoint,
        "class_names": class_names,
        "heads": summarize_splits(reports, class_names),
        "unavailable": unavailable,
        "splits": split_rows,
    }
    summary["plots"] = _plot_confusions(summary, out)
    write_json(summary, out / "summary.json")
    (out / "summary.md").write_text(summary_markdown(summary), encoding="utf-8")
    return summary


# --------------------------------------------------------------------------------------------
# command line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deepmetric.experiments.scene_classification",
        description="Scene classification over repeated random per-class train/test splits: "
        "accuracy mean +- std of the softmax head and the nearest center.",
    )
    parser.add_argument("recipe", help="config YAML (data.name folder or scene_folder)")
    parser.add_argument("overrides", nargs="*", help="config overrides key=value (e.g. trainer.steps=200)")
    parser.add_argument("--splits", type=int, default=5, help="number of random splits (default 5)")
    parser.add_argument("--test-fraction", type=float, default=0.2, help="test fraction of every class (default 0.2)")
    parser.add_argument("--out", default=None, help="experiment folder (default runs/scene_<recipe name>)")
    parser.add_argument("--checkpoint", choices=("best", "last"), default="best",
                        help="predict with the checkpoint chosen on validation (best) or the final weights")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_intermixed_args(argv)  # overrides may come before or after the options
    config = load_config(args.recipe, args.overrides)
    out = args.out or f"runs/scene_{Path(args.recipe).stem}"
    summary = run_repeated_splits(config, args.splits, args.test_fraction, out, checkpoint=args.checkpoint,
                                  progress=not args.quiet)
    print(summary_markdown(summary).split("\n\nPer-class")[0])
    print(f"\nwritten: {Path(out) / 'summary.json'}, {Path(out) / 'summary.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
