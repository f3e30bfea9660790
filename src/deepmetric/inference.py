"""Use a trained model: load it from a run folder, embed image files, evaluate on a dataset,
search a gallery. The ``deepmetric eval | embed | search`` commands are thin wrappers of these.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deepmetric.embeddings_io import EmbeddingSet, validate_embedding_set
from deepmetric.errors import DataError

__all__ = [
    "SearchHit",
    "check_queries_have_positives",
    "collect_images",
    "embed_images",
    "evaluate_source",
    "load_model",
    "resolve_model_source",
    "search_gallery",
    "search_saved_index",
]


def resolve_model_source(source: str | Path) -> tuple[Path, str]:
    """``(run folder, checkpoint name)`` for a run folder or a checkpoint file inside one.

    A run folder uses the weights chosen on validation: ``checkpoints/wise.pt`` for a run with
    WiSE-FT (``finetune.wise_alphas``: the interpolation whose test metrics the run reports), else
    ``best.pt``, else ``last.pt``.
    """
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(
            f"model '{path}' not found; pass a run folder written by `deepmetric train` (e.g. runs/demo-...) "
            "or a checkpoint inside one (runs/NAME/checkpoints/best.pt)"
        )
    if path.is_file():
        run_dir = path.parent.parent
        if path.suffix != ".pt" or not (run_dir / "config.yaml").is_file():
            raise DataError(
                f"'{path}' is not a checkpoint inside a run folder (expected RUN/checkpoints/NAME.pt next to "
                "RUN/config.yaml); pass the run folder instead"
            )
        return run_dir, path.stem
    if not (path / "config.yaml").is_file():
        raise DataError(f"'{path}' is not a run folder (no config.yaml); pass the folder `deepmetric train` wrote")
    for which in ("wise", "best", "last"):
        if (path / "checkpoints" / f"{which}.pt").is_file():
            return path, which
    raise DataError(
        f"run folder '{path}' has no checkpoint (checkpoints/best.pt or last.pt); train it first "
        "or resume it with `deepmetric train RECIPE --out RUN --resume`"
    )


def load_model(source: str | Path, device: str = "auto") -> tuple[Any, Any, Path]:
    """``(model in eval mode, config, run folder)`` from a run folder or checkpoint."""
    from deepmetric.training import load_trained
    from deepmetric.training.seed import resolve_device

    run_dir, which = resolve_model_source(source)
    model, _, config = load_trained(run_dir, which=which, device=resolve_device(device), with_loss=False)
    return model, config, run_dir


def _is_image(path: Path) -> bool:
    from deepmetric.data.image_io import is_image_file

    return is_image_file(path)


def collect_images(inputs: list[str | Path]) -> tuple[list[Path], list[str]]:
    """Image files and a label for each, from files and folders.

    A folder whose sub-folders hold images is folder-per-class (label = sub-folder name);
    otherwise its own images are taken (label = the folder's name). A file's label is its
    parent folder's name. A ``.csv`` file is a manifest (``path,label``, paths relative to it). Raises :class:`DataError` for a missing path, a file that is not an
    image, or when no image is found.
    """
    paths: list[Path] = []
    labels: list[str] = []
    if not inputs:
        raise DataError("no images given; pass image files or folders")
    for item in inputs:
        path = Path(item).expanduser()
        if not path.exists():
            raise DataError(f"'{path}' does not exist; check the path (images or folders of images)")
        if path.is_file() and path.suffix.lower() == ".csv":  # a manifest: path,label per row
            manifest = data_source(path)
            paths += [Path(p) for p in manifest.paths]
            labels += [manifest.class_names[y] for y in manifest.labels]
            continue
        if path.is_file():
            if not _is_image(path):
                raise DataError(
                    f"'{path}' is not an image file (by its extension); pass .jpg/.png/.bmp/.tif/.webp images "
                    "or a folder of them"
                )
            paths.append(path)
            labels.append(path.parent.name)
            continue
        subdirs = sorted(d for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
        found = False
        for sub in subdirs:
            files = sorted(p for p in sub.rglob("*") if p.is_file() and _is_image(p))
            paths += files
            labels += [sub.name] * len(files)
            found = found or bool(files)
        if not found:
            files = sorted(p for p in path.iterdir() if p.is_file() and _is_image(p))
            paths += files
            labels += [path.name] * len(files)
            found = bool(files)
        if not found:
            raise DataError(
                f"folder '{path}' holds no images; put images in it (or in one sub-folder per class)"
            )
    return paths, labels


def embed_images(
    model: Any,
    paths: list[Path],
    labels: list[str],
    batch_size: int = 64,
    progress: bool = True,
) -> EmbeddingSet:
    """Embed image files with ``model`` (its evaluation transform); labels are kept as given."""
    from deepmetric.data.image_dataset import ImageFileDataset, index_labels
    from deepmetric.training import embed

    index, names = index_labels(labels)
    transform = model.eval_transform() if callable(getattr(model, "eval_transform", None)) else None
    dataset = ImageFileDataset(paths, index, names, transform=transform)
    embeddings, _ = embed(model, dataset, batch_size=batch_size, progress=progress)
    return validate_embedding_set(embeddings.numpy(), np.asarray(labels), [str(p) for p in paths], source="embed")


def evaluate_source(
    source: str | Path,
    data: str | Path | None = None,
    overrides: list[str] | None = None,
    device: str = "auto",
    progress: bool = True,
    class_depth: int = 1,
) -> tuple[dict[str, float], Any]:
    """Metrics of a trained model; returns ``(metrics, config)``.

    Without ``data``: the run's own test split (rebuilt from its config.yaml). With ``data``: a
    folder of class folders (``class_depth`` levels down) or a CSV manifest (``path,label``; with
    ``is_query`` the marked rows query the rest, else every image is a leave-one-out query).
    ``overrides`` (``eval.k_values=[1,5]`` ...) change the run's config for this evaluation.
    """
    from deepmetric.config import load_config
    from deepmetric.training.builders import build_datasets
    from deepmetric.training.evaluate import evaluate_model
    from deepmetric.training.seed import resolve_device

    model, config, _ = load_model(source, device)
    if overrides:
        config = load_config(config, overrides)
    if data is None:
        dataset = build_datasets(config, model).test
    else:
        transform = model.eval_transform() if callable(getattr(model, "eval_transform", None)) else None
        dataset = data_source(Path(data), transform, class_depth)
        if getattr(dataset, "is_query", None) is None:
            check_queries_have_positives(dataset.labels, dataset.class_names, str(data))
    first = next(iter(model.parameters()))
    metrics, _, _ = evaluate_model(model, dataset, config.eval, first.device if device == "auto" else resolve_device(device), progress=progress)
    return metrics, config


def data_source(path: Path, transform: Any = None, class_depth: int = 1) -> Any:
    """Every image of a CSV manifest (``.csv``) or of a folder of class folders, for evaluation."""
    if path.suffix.lower() == ".csv":
        if not path.is_file():
            raise DataError(f"manifest '{path}' does not exist; check the path")
        from deepmetric.data.manifest import CSVManifestDataset

        return CSVManifestDataset(path, split=None, transform=transform)
    from deepmetric.data.folder import folder_dataset

    return folder_dataset(path, split="all", transform=transform, class_depth=class_depth)


def check_queries_have_positives(labels: list[int], class_names: list[str], source: str) -> None:
    """Raise :class:`DataError` if a class has a single item: as a leave-one-out query it has no
    correct answer, so Recall@K and MAP@R would silently skip or penalise it."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(class_names))
    single = [class_names[i] for i in np.flatnonzero(counts == 1)]
    if single:
        more = f" (and {len(single) - 1} more)" if len(single) > 1 else ""
        raise DataError(
            f"class '{single[0]}'{more} in {source} has a single image, so it has no other image to retrieve; "
            "add at least one more image to the class or remove its folder"
        )


@dataclass(frozen=True)
class SearchHit:
    """One neighbour of a query."""

    rank: int
    path: str
    label: str
    score: float


def search_gallery(
    gallery: EmbeddingSet, queries: np.ndarray, k: int = 5, metric: str = "cosine"
) -> list[list[SearchHit]]:
    """Top-``k`` gallery items for every query row, best first (cosine similarity, or Euclidean
    distance for ``metric="euclidean"``)."""
    from deepmetric.errors import InputError
    from deepmetric.evaluation import knn_search

    if queries.ndim != 2 or queries.shape[1] != gallery.dim:
        raise DataError(
            f"query embeddings have {queries.shape[-1]} dims but the gallery has {gallery.dim}; "
            "embed the queries with the model that embedded the gallery"
        )
    k = min(k, len(gallery))
    try:
        result = knn_search(queries.astype(np.float32), gallery.embeddings, k, metric=metric)
    except InputError as exc:
        raise DataError(str(exc)) from exc
    out = []
    for row_idx, row_scores in zip(np.asarray(result.indices), np.asarray(result.scores)):
        out.append([
            SearchHit(rank + 1, gallery.paths[i], str(gallery.labels[i]), float(s))
            for rank, (i, s) in enumerate(zip(row_idx.tolist(), row_scores.tolist()))
        ])
    return out


def search_saved_index(index: Any, queries: np.ndarray, k: int = 5) -> list[list[SearchHit]]:
    """Top-``k`` items of a saved :class:`~deepmetric.search_index.SearchIndex` for every query row."""
    from deepmetric.errors import InputError

    try:
        indices, scores = index.search(np.asarray(queries, dtype=np.float32), k)
    except InputError as exc:
        raise DataError(f"{exc}; embed the queries with the model that embedded the indexed gallery") from exc
    labels = list(index.labels) or [""] * index.size
    paths = list(index.paths) or [""] * index.size
    return [
        [SearchHit(rank + 1, str(paths[i]), str(labels[i]), float(sc))
         for rank, (i, sc) in enumerate(zip(row_i.tolist(), row_s.tolist())) if i >= 0]
        for row_i, row_s in zip(np.asarray(indices), np.asarray(scores))
    ]

