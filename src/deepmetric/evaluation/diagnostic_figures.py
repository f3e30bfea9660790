"""Figures of a diagnostic (lesion classification) run: ROC curves and Grad-CAM heat maps.

* :func:`plot_roc` -- one-vs-rest ROC curve of every class present in the split, AUC in the
  legend (:func:`deepmetric.evaluation.medical.roc_curves`).
* :func:`heatmap_rows` -- up to ``count`` images of a split, classes in turn (the first image of
  every class, then the second, ...): the de-normalised image, its Grad-CAM map
  (:func:`deepmetric.evaluation.heatmaps.grad_cam`) for the predicted class on the last
  backbone stage, the model's last spatial attention map when it offers ``attention_maps()``,
  the true and the predicted class and its probability.
* :func:`plot_heatmaps` -- those rows as a PNG grid (image | Grad-CAM | attention).

The classifier is any callable from the model's evaluation embedding to class scores over the
classes ``0 .. C-1`` of the split (``class_index`` maps a score column to a split label).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from deepmetric.models.contracts import embedding_of

__all__ = ["explained_layer", "heatmap_rows", "plot_heatmaps", "plot_roc"]


def plot_roc(labels: np.ndarray, probabilities: np.ndarray, class_names: Sequence[str], path: Path) -> Path:
    """PNG of the one-vs-rest ROC curve of every class with positives and negatives, AUC in the legend."""
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


def explained_layer(model: nn.Module) -> nn.Module | None:
    """The module whose output Grad-CAM explains: the last feature stage of a timm backbone
    (``model.embedder.backbone`` or ``model.backbone`` with ``feature_info``; with DeMAL's
    attention inside it), else the last ``Conv2d``; None for a model without convolutions."""
    embedder = getattr(model, "embedder", model)
    backbone = getattr(embedder, "backbone", None)
    info = getattr(backbone, "feature_info", None)
    if isinstance(backbone, nn.Module) and info is not None:
        modules = info.module_name() if hasattr(info, "module_name") else [i["module"] for i in info]
        return backbone.get_submodule(modules[-1])
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1] if convs else None


def _spread_over_classes(labels: np.ndarray, count: int) -> list[int]:
    """Up to ``count`` item indices: the first item of every class, then the second, ..."""
    pools = [list(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    order: list[int] = []
    while len(order) < min(count, len(labels)):
        for pool in pools:
            if pool and len(order) < count:
                order.append(int(pool.pop(0)))
    return order


def heatmap_rows(
    model: nn.Module,
    scores: Callable[[Tensor], Tensor],
    dataset: Any,
    count: int,
    device: torch.device,
    class_index: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    """Up to ``count`` images of ``dataset`` with their Grad-CAM and attention maps (see the
    module docstring); ``[]`` when ``count`` is 0. Each row: ``image`` (H x W x 3 in [0, 1]),
    ``cam`` (H x W), ``attention`` (H x W or None), ``label``, ``predicted``, ``confidence``."""
    from deepmetric.evaluation.heatmaps import grad_cam

    layer = explained_layer(model)
    labels = np.asarray(dataset.labels)
    order = _spread_over_classes(labels, count)
    if not order or layer is None:
        return []
    images = torch.stack([dataset[i][0] for i in order]).to(device)

    def class_scores(outputs: Tensor | dict[str, Tensor]) -> Tensor:
        return scores(embedding_of(model, outputs))

    deterministic = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    try:  # some backward kernels (e.g. pooling on CUDA) have no deterministic version: warn only
        if deterministic[0]:
            torch.use_deterministic_algorithms(True, warn_only=True)
        cams = grad_cam(model, layer, images, class_scores)
    finally:
        torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])
        model.zero_grad(set_to_none=True)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        probs = torch.softmax(class_scores(model(images)).float(), dim=1)
        maps = model.attention_maps() if callable(getattr(model, "attention_maps", None)) else []
    model.train(was_training)
    attention = None
    if maps:
        attention = torch.nn.functional.interpolate(maps[-1].float(), size=images.shape[-2:], mode="bilinear",
                                                    align_corners=False).squeeze(1)
    mean = torch.as_tensor(getattr(model, "mean", (0.5, 0.5, 0.5)), device=device).view(1, -1, 1, 1)
    std = torch.as_tensor(getattr(model, "std", (0.5, 0.5, 0.5)), device=device).view(1, -1, 1, 1)
    shown = (images.detach() * std + mean).clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
    to_label = list(class_index) if class_index is not None else None
    rows = []
    for r, i in enumerate(order):
        column = int(probs[r].argmax())
        rows.append({
            "image": shown[r], "cam": cams[r].cpu().numpy(),
            "attention": attention[r].cpu().numpy() if attention is not None else None,
            "label": int(labels[i]), "predicted": to_label[column] if to_label is not None else column,
            "confidence": float(probs[r].max()),
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
