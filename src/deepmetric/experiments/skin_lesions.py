"""Skin-lesion classification with DeMAL-CNN: dataset loaders and stratified k-fold cross-validation.

Method: He, Wang, Zhao, Yao, "Deep metric attention learning for skin lesion classification in
dermoscopy images", Complex & Intelligent Systems, 2022 (METHODS.md section 5, a reconstruction
from the abstract): a mixed-attention CNN (``model.name: demal``) trained on class-balanced
triplet batches (``sampler.name: triplet``) with the hybrid triplet + cross-entropy loss
(``loss.name: triplet_hybrid``); prediction uses the loss-owned classifier.

**Loaders** (registered as ``ph2``, ``isic2016``, ``isic2017`` in the dataset registry; the
parsers are :mod:`deepmetric.data.skin_lesions`) return an
:class:`~deepmetric.data.image_dataset.ImageFileDataset` of one split:

* ``fold`` / ``n_folds`` / ``split_seed`` given: fold ``fold`` of a stratified k-fold split
  (:func:`stratified_folds`, scikit-learn ``StratifiedKFold(shuffle=True,
  random_state=split_seed)``) is the test split, the other folds the training split;
* otherwise PH2 is split per class with ``test_fraction`` (seeded by ``split_seed``), and ISIC
  uses the challenge's own training and test releases;
* ``test_ph2_root`` (ISIC loaders): the test split is PH2 relabelled into the ISIC classes
  (nevi -> ``nevus`` / ``benign``; melanoma -> ``melanoma`` / ``malignant``) -- the
  generalisation test of the paper (train on ISIC, test on PH2).

**Cross-validation** (:func:`run_cross_validation`): for fold k the config gets
``data.params.fold=k`` (:func:`fold_config`); :func:`deepmetric.training.fit` trains it into
``out_dir/fold_<k>/`` (validation carved from the training folds by items, ``data.val_by=items``;
checkpoint chosen there); :func:`predict_fold` then computes, from the chosen checkpoint, the
softmax probabilities of the loss's classifier on the test fold and writes into the run folder

* ``diagnostics.json``: :func:`~deepmetric.evaluation.medical.diagnostic_metrics` for the
  classes (``multiclass``: accuracy, balanced accuracy and, for the malignant class, sensitivity,
  specificity, AUC, average precision; per-class and macro values too) and for malignant vs the
  rest (``binary``: scores ``[1 - p_m, p_m]``);
* ``test_predictions.npz`` (``labels``, ``predictions``, ``probabilities``, ``class_names``);
* ``figures/roc.png`` (one-vs-rest ROC curves) and ``figures/heatmaps.png`` (sample test
  images, their Grad-CAM overlay for the predicted class and, with attention, the last spatial
  attention map); ``report.html`` (:mod:`deepmetric.evaluation.report`) shows them.

``out_dir/summary.json`` and ``summary.md`` hold mean +- sample std (ddof = 1) over the folds.
A fold whose ``diagnostics.json`` exists is reused; an unfinished fold run is resumed.

Command line::

    python -m deepmetric.experiments.skin_lesions RECIPE.yaml --folds 5 [--out DIR] \\
        [--split-seed N] [--checkpoint best|last] [--heatmaps 4] [--no-report] [key=value ...]

``--folds 1`` trains once on the loader's own train/test split (e.g. ISIC 2017 -> PH2).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from deepmetric.config import Config, load_config
from deepmetric.data.image_dataset import ImageFileDataset, Transform
from deepmetric.data.skin_lesions import LabelledImages, binarize, isic2016, isic2017, ph2
from deepmetric.errors import ConfigError, DataError

__all__ = [
    "MALIGNANT",
    "SUMMARY_KEYS",
    "fold_config",
    "isic2016_dataset",
    "isic2017_dataset",
    "main",
    "ph2_dataset",
    "predict_fold",
    "run_cross_validation",
    "select_split",
    "stratified_folds",
    "summarize_folds",
    "summary_markdown",
]

#: names of the malignant class, in order of preference
MALIGNANT = ("melanoma", "malignant")

#: (key in the summary, title) of the headline table
SUMMARY_KEYS = (
    ("accuracy", "accuracy"),
    ("balanced_accuracy", "balanced accuracy"),
    ("sensitivity", "melanoma sensitivity"),
    ("specificity", "melanoma specificity"),
    ("auc", "melanoma AUC"),
    ("average_precision", "melanoma AP"),
)

DIAGNOSTICS_FILE = "diagnostics.json"
PREDICTIONS_FILE = "test_predictions.npz"
FIGURES_DIR = "figures"


# --------------------------------------------------------------------------------------------
# splits


def stratified_folds(labels: Sequence[int], n_folds: int, seed: int) -> list[np.ndarray]:
    """The test indices of each of ``n_folds`` stratified folds (scikit-learn ``StratifiedKFold``
    with shuffling, ``random_state=seed``): disjoint, together every index once, each class
    spread over the folds in proportion. Raises :class:`DataError` if a class has fewer than
    ``n_folds`` items."""
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray(labels, dtype=np.int64)
    if int(n_folds) < 2:
        raise ConfigError(f"n_folds must be >= 2 for cross-validation, got {n_folds}")
    counts = np.bincount(y) if len(y) else np.zeros(0, dtype=int)
    small = [c for c in np.unique(y) if counts[c] < n_folds]
    if small:
        raise DataError(
            f"class(es) {small} have fewer than {n_folds} items, so {n_folds} stratified folds cannot "
            "each hold one; lower --folds"
        )
    splitter = StratifiedKFold(n_splits=int(n_folds), shuffle=True, random_state=int(seed))
    return [np.sort(test) for _, test in splitter.split(np.zeros(len(y)), y)]


def select_split(
    labels: Sequence[int],
    split: str,
    fold: int | None = None,
    n_folds: int = 5,
    split_seed: int = 0,
    test_fraction: float = 0.2,
) -> list[int]:
    """Indices of ``split`` (``train`` / ``test`` / ``all``): fold ``fold`` of
    :func:`stratified_folds` is the test split; without ``fold``, round(test_fraction x n_c)
    items of every class (at least 1, seeded by ``split_seed``) are."""
    n = len(labels)
    if split == "all":
        return list(range(n))
    if split not in ("train", "test"):
        raise ConfigError(f"split must be 'train', 'test' or 'all', got '{split}'")
    if fold is not None:
        if not 0 <= int(fold) < int(n_folds):
            raise ConfigError(f"data.params.fold must be in 0..{n_folds - 1}, got {fold}")
        test = set(stratified_folds(labels, n_folds, split_seed)[int(fold)].tolist())
    else:
        if not 0.0 < test_fraction < 1.0:
            raise ConfigError(f"test_fraction must be in (0, 1), got {test_fraction}")
        rng = np.random.default_rng(int(split_seed))
        y = np.asarray(labels)
        test = set()
        for c in np.unique(y):
            idx = rng.permutation(np.flatnonzero(y == c))
            take = min(len(idx) - 1, max(1, round(test_fraction * len(idx))))
            test.update(idx[:take].tolist())
    return sorted(test) if split == "test" else [i for i in range(n) if i not in test]


def _images(data: LabelledImages, keep: Sequence[int], transform: Transform | None) -> ImageFileDataset:
    return ImageFileDataset(
        [data.paths[i] for i in keep], [data.labels[i] for i in keep], list(data.class_names), transform=transform
    )


def _ph2_as(root: str | Path, class_names: Sequence[str]) -> LabelledImages:
    """PH2 relabelled into ``class_names`` (ISIC 2017: nevus / seborrheic_keratosis / melanoma;
    ISIC 2016: benign / malignant): both nevus classes -> the nevus (benign) class."""
    data = ph2(root)
    names = list(class_names)
    if "melanoma" in names and "nevus" in names:
        target = {0: names.index("nevus"), 1: names.index("nevus"), 2: names.index("melanoma")}
    elif names == ["benign", "malignant"]:
        target = {0: 0, 1: 0, 2: 1}
    else:
        raise DataError(f"cannot map PH2's classes onto {names}")
    return LabelledImages(list(data.paths), [target[y] for y in data.labels], names)


# --------------------------------------------------------------------------------------------
# dataset loaders (see deepmetric.training.builders for the loader contract)


def ph2_dataset(
    root: str | Path,
    split: str = "train",
    transform: Transform | None = None,
    fold: int | None = None,
    n_folds: int = 5,
    split_seed: int = 0,
    test_fraction: float = 0.2,
    binary: bool = False,
) -> ImageFileDataset:
    """PH2 (200 dermoscopy images: common nevus / atypical nevus / melanoma), one split.

    ``fold``/``n_folds``/``split_seed`` select a stratified k-fold split (:func:`select_split`);
    ``binary=True`` relabels as benign vs melanoma (:func:`deepmetric.data.skin_lesions.binarize`).
    """
    data = ph2(root)
    if binary:
        data = binarize(data, "melanoma")
    keep = select_split(data.labels, split, fold, n_folds, split_seed, test_fraction)
    return _images(data, keep, transform)


def _isic_dataset(
    parse: Any,
    root: str | Path,
    split: str,
    transform: Transform | None,
    files: dict[str, str],
    fold: int | None,
    n_folds: int,
    split_seed: int,
    test_ph2_root: str | Path | None,
) -> ImageFileDataset:
    root = Path(root).expanduser()
    train = parse(root / files["train_csv"], root / files["train_images"])
    if fold is not None:
        return _images(train, select_split(train.labels, split, fold, n_folds, split_seed), transform)
    if split == "train":
        return _images(train, range(len(train.labels)), transform)
    if test_ph2_root is not None:
        test = _ph2_as(test_ph2_root, train.class_names)
    else:
        test = parse(root / files["test_csv"], root / files["test_images"])
    return _images(test, range(len(test.labels)), transform)


def isic2016_dataset(
    root: str | Path,
    split: str = "train",
    transform: Transform | None = None,
    fold: int | None = None,
    n_folds: int = 5,
    split_seed: int = 0,
    test_ph2_root: str | Path | None = None,
    train_csv: str = "ISBI2016_ISIC_Part3_Training_GroundTruth.csv",
    train_images: str = "ISBI2016_ISIC_Part3_Training_Data",
    test_csv: str = "ISBI2016_ISIC_Part3_Test_GroundTruth.csv",
    test_images: str = "ISBI2016_ISIC_Part3_Test_Data",
) -> ImageFileDataset:
    """ISIC 2016 part 3 (benign / malignant) from the challenge release under ``root`` (file
    names relative to ``root``). With ``fold`` the training release is cross-validated;
    ``test_ph2_root`` tests on PH2 (nevi benign, melanoma malignant) instead of the test release."""
    files = {"train_csv": train_csv, "train_images": train_images, "test_csv": test_csv, "test_images": test_images}
    return _isic_dataset(isic2016, root, split, transform, files, fold, n_folds, split_seed, test_ph2_root)


def isic2017_dataset(
    root: str | Path,
    split: str = "train",
    transform: Transform | None = None,
    fold: int | None = None,
    n_folds: int = 5,
    split_seed: int = 0,
    test_ph2_root: str | Path | None = None,
    train_csv: str = "ISIC-2017_Training_Part3_GroundTruth.csv",
    train_images: str = "ISIC-2017_Training_Data",
    test_csv: str = "ISIC-2017_Test_v2_Part3_GroundTruth.csv",
    test_images: str = "ISIC-2017_Test_v2_Data",
) -> ImageFileDataset:
    """ISIC 2017 part 3 (nevus / seborrheic keratosis / melanoma) from the challenge release
    under ``root``. With ``fold`` the training release is cross-validated; ``test_ph2_root``
    tests on PH2 (both nevus classes -> nevus) instead of the test release."""
    files = {"train_csv": train_csv, "train_images": train_images, "test_csv": test_csv, "test_images": test_images}
    return _isic_dataset(isic2017, root, split, transform, files, fold, n_folds, split_seed, test_ph2_root)


# --------------------------------------------------------------------------------------------
# one fold


def fold_config(config: Config, fold: int | None, n_folds: int, split_seed: int) -> Config:
    """``config`` with fold ``fold`` of ``n_folds`` (split seed ``split_seed``) selected through
    ``data.params``; ``fold=None`` leaves the loader's own split. Raises :class:`ConfigError`
    for a loader without folds or a validation split carved from whole classes."""
    if config.data.val_by != "items" and config.data.val_fraction > 0:
        raise ConfigError(
            "lesion classification needs every class in training, but data.val_by=classes holds whole "
            "classes out for validation; set data.val_by=items"
        )
    if fold is None:
        return config
    from deepmetric.training.builders import DATASET_REGISTRY, _accepts, resolve

    if config.data.name not in DATASET_REGISTRY:
        raise ConfigError(f"unknown dataset '{config.data.name}'; use ph2, isic2016 or isic2017")
    names, _ = _accepts(resolve(DATASET_REGISTRY[config.data.name]))
    if not {"fold", "n_folds", "split_seed"} <= names:
        raise ConfigError(
            f"dataset '{config.data.name}' has no k-fold split (parameters fold, n_folds, split_seed); "
            "use data.name=ph2, isic2016 or isic2017, or --folds 1"
        )
    params = {**config.data.params, "fold": int(fold), "n_folds": int(n_folds), "split_seed": int(split_seed)}
    return config.model_copy(update={"data": config.data.model_copy(update={"params": params})})


def _classifier(loss: nn.Module) -> nn.Module:
    """The loss (or a loss it wraps) whose ``logits`` is a trained classifier."""
    from deepmetric.experiments.common import classifier_trained, unwrap_loss

    for part in unwrap_loss(loss):
        if callable(getattr(part, "logits", None)) and classifier_trained(part):
            return part
    raise ConfigError(
        f"loss {type(loss).__name__} has no trained classifier to predict with; use loss.name=triplet_hybrid, "
        "normalized_softmax, or add one with loss.ce_weight=1"
    )


def malignant_index(class_names: Sequence[str]) -> int:
    """Index of the malignant class (``melanoma`` or ``malignant``)."""
    for name in MALIGNANT:
        if name in class_names:
            return list(class_names).index(name)
    raise DataError(f"no malignant class among {list(class_names)}; expected one of {MALIGNANT}")


def _last_stage(model: nn.Module) -> nn.Module:
    """The module whose output Grad-CAM explains: the last backbone stage (with its attention)."""
    embedder = getattr(model, "embedder", model)
    backbone = getattr(embedder, "backbone", None)
    info = getattr(backbone, "feature_info", None)
    if backbone is not None and info is not None:
        modules = info.module_name() if hasattr(info, "module_name") else [i["module"] for i in info]
        return backbone.get_submodule(modules[-1])
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ConfigError(f"model {type(model).__name__} has no convolution to explain with Grad-CAM")
    return convs[-1]


def _heatmap_rows(
    model: nn.Module, classifier: nn.Module, dataset: Any, count: int, device: str
) -> list[dict[str, Any]]:
    """Up to ``count`` test images (classes in turn): image, Grad-CAM, attention map, labels."""
    from deepmetric.evaluation.heatmaps import grad_cam

    labels = np.asarray(dataset.labels)
    order: list[int] = []
    pools = [list(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    while len(order) < min(count, len(labels)):
        for pool in pools:
            if pool and len(order) < count:
                order.append(int(pool.pop(0)))
    if not order:
        return []
    images = torch.stack([dataset[i][0] for i in order]).to(device)
    cams = grad_cam(model, _last_stage(model), images, classifier.logits)
    model.eval()
    with torch.no_grad():
        probs = torch.softmax(classifier.logits(model(images)), dim=1)
    maps = model.attention_maps() if callable(getattr(model, "attention_maps", None)) else []
    attention = None
    if maps:
        attention = torch.nn.functional.interpolate(maps[-1].float(), size=images.shape[-2:], mode="bilinear",
                                                    align_corners=False).squeeze(1)
    mean = torch.as_tensor(getattr(model, "mean", (0.5, 0.5, 0.5)), device=device).view(1, -1, 1, 1)
    std = torch.as_tensor(getattr(model, "std", (0.5, 0.5, 0.5)), device=device).view(1, -1, 1, 1)
    shown = (images.detach() * std + mean).clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
    rows = []
    for r, i in enumerate(order):
        rows.append({
            "image": shown[r], "cam": cams[r].cpu().numpy(),
            "attention": attention[r].cpu().numpy() if attention is not None else None,
            "label": int(labels[i]), "predicted": int(probs[r].argmax()), "confidence": float(probs[r].max()),
        })
    return rows


def plot_heatmaps(rows: Sequence[dict[str, Any]], class_names: Sequence[str], path: Path) -> Path:
    """PNG grid: one row per image -- the image, its Grad-CAM overlay and (if any) the spatial
    attention overlay, titled with the true and predicted class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 3 if any(r["attention"] is not None for r in rows) else 2
    fig, axes = plt.subplots(len(rows), cols, figsize=(2.6 * cols, 2.6 * len(rows)), squeeze=False)
    for row, axs in zip(rows, axes):
        axs[0].imshow(row["image"])
        axs[0].set_title(f"true: {class_names[row['label']]}", fontsize=8)
        axs[1].imshow(row["image"])
        axs[1].imshow(row["cam"], cmap="jet", alpha=0.45, vmin=0, vmax=1)
        axs[1].set_title(f"Grad-CAM, pred: {class_names[row['predicted']]} ({row['confidence']:.2f})", fontsize=8)
        if cols == 3:
            if row["attention"] is not None:
                axs[2].imshow(row["image"])
                axs[2].imshow(row["attention"], cmap="jet", alpha=0.45)
            axs[2].set_title("spatial attention (last block)", fontsize=8)
        for ax in axs:
            ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_roc(labels: np.ndarray, probabilities: np.ndarray, class_names: Sequence[str], path: Path) -> Path:
    """PNG of the one-vs-rest ROC curve of every class present, AUC in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import auc as area

    from deepmetric.evaluation.medical import roc_curves

    fig, ax = plt.subplots(figsize=(4.5, 4.2))
    for c, (fpr, tpr) in roc_curves(labels, probabilities).items():
        ax.plot(fpr, tpr, label=f"{class_names[c]} (AUC {area(fpr, tpr):.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=0.8)
    ax.set_xlabel("false positive rate (1 - specificity)")
    ax.set_ylabel("true positive rate (sensitivity)")
    ax.set_title("ROC, one class vs the rest (test)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def predict_fold(
    run_dir: str | Path, checkpoint: str = "best", heatmaps: int = 4, device: str = "cpu", report: bool = True
) -> dict[str, Any]:
    """Diagnostic metrics, predictions and figures of the run in ``run_dir`` (see the module
    docstring); returns the ``diagnostics.json`` content ``{"checkpoint", "checkpoint_step",
    "class_names", "malignant", "num_test", "multiclass": {...}, "binary": {...}, "figures"}``."""
    from deepmetric.evaluation.medical import diagnostic_metrics
    from deepmetric.training import embed, load_trained
    from deepmetric.training.builders import build_datasets
    from deepmetric.training.checkpoint import load_checkpoint, write_json
    from deepmetric.training.run_folder import RunPaths

    if checkpoint not in ("best", "last"):
        raise ConfigError(f"checkpoint must be 'best' or 'last', got '{checkpoint}'")
    run_dir = Path(run_dir)
    paths = RunPaths(run_dir)
    which = checkpoint if (paths.checkpoints / f"{checkpoint}.pt").is_file() else "last"
    model, loss, config = load_trained(run_dir, which, device=device)
    step = int(load_checkpoint(paths.checkpoints / f"{which}.pt", map_location="cpu")["step"])
    test = build_datasets(config, model).test
    class_names = list(test.class_names)
    classifier = _classifier(loss)
    classifier.eval()
    emb, labels = embed(model, test, batch_size=config.eval.batch_size, device=device)
    with torch.no_grad():
        probs = torch.softmax(classifier.logits(emb.to(device)).float(), dim=1).cpu().numpy().astype(np.float64)
    y = labels.numpy().astype(np.int64)
    m = malignant_index(class_names)
    multiclass = diagnostic_metrics(y, probs, class_names, positive_class=m)
    binary = diagnostic_metrics((y == m).astype(np.int64), np.stack([1 - probs[:, m], probs[:, m]], axis=1),
                                ["rest", class_names[m]])
    figures = {"roc": f"{FIGURES_DIR}/roc.png"}
    plot_roc(y, probs, class_names, run_dir / figures["roc"])
    if heatmaps > 0:
        rows = _heatmap_rows(model, classifier, test, heatmaps, device)
        if rows:
            figures["heatmaps"] = f"{FIGURES_DIR}/heatmaps.png"
            plot_heatmaps(rows, class_names, run_dir / figures["heatmaps"])
    np.savez(run_dir / PREDICTIONS_FILE, labels=y, predictions=probs.argmax(axis=1), probabilities=probs,
             class_names=np.asarray(class_names, dtype=str))
    result: dict[str, Any] = {
        "checkpoint": which, "checkpoint_step": step, "class_names": class_names, "malignant": class_names[m],
        "num_test": int(len(y)), "multiclass": _finite(multiclass), "binary": _finite(binary), "figures": figures,
    }
    write_json(result, run_dir / DIAGNOSTICS_FILE)
    if report:
        from deepmetric.evaluation.report import write_report

        write_report(run_dir)
    return result


def _finite(metrics: dict[str, float]) -> dict[str, float | None]:
    return {k: (v if np.isfinite(v) else None) for k, v in metrics.items()}


# --------------------------------------------------------------------------------------------
# summary


def summarize_folds(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``{"multiclass": {metric: {"mean", "std", "values"}}, "binary": {...}}``: mean and sample
    std (ddof = 1; 0 for one fold) over the folds that have a finite value."""
    out: dict[str, Any] = {}
    for block in ("multiclass", "binary"):
        keys: list[str] = []
        for r in results:
            keys += [k for k in r[block] if k not in keys]
        stats = {}
        for key in keys:
            values = [float(r[block][key]) for r in results if r[block].get(key) is not None]
            if values:
                arr = np.asarray(values)
                stats[key] = {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
                              "values": values}
        out[block] = stats
    return out


def _pm(stat: dict[str, float] | None) -> str:
    return f"{100 * stat['mean']:.1f} +- {100 * stat['std']:.1f}" if stat else "-"


def summary_markdown(summary: dict[str, Any]) -> str:
    """The summary as Markdown: the headline metrics (%, mean +- std over folds) and the binary view."""
    mc, bi = summary["metrics"]["multiclass"], summary["metrics"]["binary"]
    lines = [
        f"# Skin-lesion classification: {summary['n_folds']} fold(s), classes {', '.join(summary['class_names'])}",
        "",
        f"Split seed {summary['split_seed']}; checkpoint {summary['checkpoint']} (chosen on validation items "
        f"of the training folds). Values in %, mean +- sample std over folds; malignant class '{summary['malignant']}'.",
        "",
        "| " + " | ".join(title for _, title in SUMMARY_KEYS) + " |",
        "|" + "---|" * len(SUMMARY_KEYS),
        "| " + " | ".join(_pm(mc.get(key)) for key, _ in SUMMARY_KEYS) + " |",
        "",
        f"Binary ({summary['malignant']} vs rest, threshold 0.5 on its probability): accuracy {_pm(bi.get('accuracy'))}, "
        f"balanced accuracy {_pm(bi.get('balanced_accuracy'))}, sensitivity {_pm(bi.get('sensitivity'))}, "
        f"specificity {_pm(bi.get('specificity'))}. Macro one-vs-rest AUC {_pm(mc.get('macro/auc'))}.",
    ]
    return "\n".join(lines) + "\n"


def _fold_done(run_dir: Path) -> bool:
    metrics = run_dir / "metrics.json"
    return metrics.is_file() and "test" in json.loads(metrics.read_text(encoding="utf-8"))


def run_cross_validation(
    config: Config | str | Path | dict[str, Any],
    n_folds: int,
    out_dir: str | Path,
    split_seed: int | None = None,
    checkpoint: str = "best",
    heatmaps: int = 4,
    report: bool = True,
    progress: bool = False,
    folds: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Train and evaluate ``config`` on every fold of a stratified ``n_folds``-fold split.

    Args:
        config: a :class:`Config` (or YAML path / dict) with data ``ph2``, ``isic2016`` or ``isic2017``.
        n_folds: >= 2 for cross-validation; 1 trains once on the loader's own train/test split.
        out_dir: ``fold_<k>/`` run folders, ``summary.json``, ``summary.md``.
        split_seed: seed of the folds (default ``config.seed``).
        checkpoint: predict with ``best`` (chosen on validation) or ``last``.
        heatmaps: number of test images in each fold's heat-map grid (0: none).
        report: write each fold's ``report.html``.
        progress: training progress bars.
        folds: run only these folds (default all), e.g. to spread them over machines.

    Returns:
        The ``summary.json`` content: ``{"n_folds", "split_seed", "checkpoint", "class_names",
        "malignant", "metrics": summarize_folds(...), "folds": [per-fold rows]}``.
    """
    from deepmetric.experiments.common import check_same_config
    from deepmetric.training import fit
    from deepmetric.training.checkpoint import write_json
    from deepmetric.training.run_folder import RunPaths

    if not isinstance(config, Config):
        config = load_config(config)
    if int(n_folds) < 1:
        raise ConfigError(f"n_folds must be >= 1, got {n_folds}")
    seed = config.seed if split_seed is None else int(split_seed)
    chosen = list(range(int(n_folds))) if folds is None else [int(f) for f in folds]
    if not chosen or any(not 0 <= f < int(n_folds) for f in chosen):
        raise ConfigError(f"folds must be in 0..{int(n_folds) - 1}, got {chosen}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results, rows = [], []
    for f in chosen:
        cfg = fold_config(config, f if n_folds > 1 else None, int(n_folds), seed)
        run_dir = out / (f"fold_{f}" if n_folds > 1 else "run")
        check_same_config(run_dir, cfg)
        saved = run_dir / DIAGNOSTICS_FILE
        result = json.loads(saved.read_text(encoding="utf-8")) if saved.is_file() else None
        if result is None or result.get("checkpoint") != checkpoint:
            if not _fold_done(run_dir):
                fit(cfg, run_dir, resume=RunPaths(run_dir).last.is_file(), progress=progress)
            result = predict_fold(run_dir, checkpoint=checkpoint, heatmaps=heatmaps, report=report)
        results.append(result)
        rows.append({"fold": f, "run_dir": str(run_dir), "num_test": result["num_test"],
                     "checkpoint_step": result["checkpoint_step"],
                     **{k: result["multiclass"].get(k) for k, _ in SUMMARY_KEYS}})
    names = results[0]["class_names"]
    summary: dict[str, Any] = {
        "n_folds": int(n_folds), "folds_run": chosen, "split_seed": seed, "checkpoint": checkpoint,
        "class_names": names, "malignant": results[0]["malignant"],
        "metrics": summarize_folds(results), "folds": rows,
    }
    write_json(summary, out / "summary.json")
    (out / "summary.md").write_text(summary_markdown(summary), encoding="utf-8")
    return summary


# --------------------------------------------------------------------------------------------
# command line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deepmetric.experiments.skin_lesions",
        description="DeMAL-CNN skin-lesion classification with stratified k-fold cross-validation: "
        "accuracy, balanced accuracy, melanoma sensitivity / specificity / AUC / AP (mean +- std).",
    )
    parser.add_argument("recipe", help="config YAML (data.name ph2, isic2016 or isic2017)")
    parser.add_argument("overrides", nargs="*", help="config overrides key=value (e.g. trainer.steps=200)")
    parser.add_argument("--folds", type=int, default=5, help="stratified folds (default 5; 1 = the loader's own split)")
    parser.add_argument("--split-seed", type=int, default=None, help="seed of the folds (default: the config seed)")
    parser.add_argument("--out", default=None, help="experiment folder (default runs/skin_<recipe name>)")
    parser.add_argument("--checkpoint", choices=("best", "last"), default="best",
                        help="predict with the checkpoint chosen on validation (best) or the final weights")
    parser.add_argument("--heatmaps", type=int, default=4, help="test images in each heat-map grid (0: none)")
    parser.add_argument("--no-report", action="store_true", help="do not write each fold's report.html")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_intermixed_args(argv)
    config = load_config(args.recipe, args.overrides)
    out = args.out or f"runs/skin_{Path(args.recipe).stem}"
    summary = run_cross_validation(config, args.folds, out, split_seed=args.split_seed, checkpoint=args.checkpoint,
                                   heatmaps=args.heatmaps, report=not args.no_report, progress=not args.quiet)
    print(summary_markdown(summary))
    print(f"written: {Path(out) / 'summary.json'}, {Path(out) / 'summary.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
