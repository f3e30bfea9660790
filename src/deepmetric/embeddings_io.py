"""Embeddings files: one ``.npz`` holding ``embeddings`` (N x D float32), ``labels`` (N) and
``paths`` (N strings, the source of each row).

``deepmetric embed`` writes them, ``deepmetric search`` and the report read them, and the
trainer stores the test split's embeddings in the same format (``test_embeddings.npz``).
Loading validates the file, so a gallery whose labels or paths do not line up with its
embeddings fails with a :class:`~deepmetric.errors.DataError` that says how to fix it instead of
silently returning wrong neighbours.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deepmetric.errors import DataError

REQUIRED_KEYS = ("embeddings", "labels")


@dataclass(frozen=True)
class EmbeddingSet:
    """Embeddings with one label and one source path per row."""

    embeddings: np.ndarray  # (N, D) float32
    labels: np.ndarray  # (N,) int or str
    paths: list[str]  # N entries ("" when unknown)

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def dim(self) -> int:
        """Embedding dimension D."""
        return int(self.embeddings.shape[1])


def _as_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, without importing torch here
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def validate_embedding_set(
    embeddings: Any, labels: Any, paths: Any | None = None, source: str = "embeddings"
) -> EmbeddingSet:
    """Check shapes and values and return a normalised :class:`EmbeddingSet`.

    Raises :class:`DataError` when embeddings are not a finite 2-D array, or when the number of
    labels or paths differs from the number of embeddings.
    """
    emb = _as_numpy(embeddings)
    lab = _as_numpy(labels)
    fix = "re-create it with `deepmetric embed` (or `save_embeddings`) so every row has its label and path"
    if emb.ndim != 2 or emb.shape[0] == 0 or emb.shape[1] == 0:
        raise DataError(
            f"{source}: embeddings must be a non-empty 2-D array (N x D), got shape {tuple(emb.shape)}; {fix}"
        )
    if not np.issubdtype(emb.dtype, np.number) or np.issubdtype(emb.dtype, np.complexfloating):
        raise DataError(f"{source}: embeddings must be real numbers, got dtype {emb.dtype}; {fix}")
    emb = emb.astype(np.float32, copy=False)
    if not np.isfinite(emb).all():
        bad = int((~np.isfinite(emb)).any(axis=1).sum())
        raise DataError(
            f"{source}: {bad} of {emb.shape[0]} embeddings contain NaN or infinite values; "
            "check the model checkpoint (a diverged run gives NaN) and re-embed"
        )
    if lab.ndim != 1:
        raise DataError(f"{source}: labels must be 1-D (one per embedding), got shape {tuple(lab.shape)}; {fix}")
    if lab.shape[0] != emb.shape[0]:
        raise DataError(
            f"{source}: {emb.shape[0]} embeddings but {lab.shape[0]} labels, they do not match; {fix}"
        )
    if paths is None:
        path_list = [""] * emb.shape[0]
    else:
        path_arr = _as_numpy(paths)
        if path_arr.ndim != 1:
            raise DataError(f"{source}: paths must be 1-D (one per embedding), got shape {tuple(path_arr.shape)}; {fix}")
        path_list = [str(p) for p in path_arr.tolist()]
        if len(path_list) != emb.shape[0]:
            raise DataError(
                f"{source}: {emb.shape[0]} embeddings but {len(path_list)} paths, they do not match; {fix}"
            )
    if lab.dtype.kind in "US" or lab.dtype == object:
        lab = lab.astype(str)
    elif lab.dtype.kind not in "iu":
        if lab.dtype.kind == "f" and np.all(np.isfinite(lab)) and np.all(lab == np.round(lab)):
            lab = lab.astype(np.int64)
        else:
            raise DataError(f"{source}: labels must be integers or strings, got dtype {lab.dtype}; {fix}")
    return EmbeddingSet(emb, lab, path_list)


def save_embeddings(path: str | Path, embeddings: Any, labels: Any, paths: Any | None = None) -> Path:
    """Validate and write an embeddings file; returns its path (``.npz`` is appended if missing)."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    data = validate_embedding_set(embeddings, labels, paths, source=str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, embeddings=data.embeddings, labels=data.labels, paths=np.asarray(data.paths, dtype=str))
    return path


def load_embeddings(path: str | Path) -> EmbeddingSet:
    """Read and validate an embeddings file written by :func:`save_embeddings`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"embeddings file '{path}' not found; create it with `deepmetric embed RUN IMAGES -o {path.name}`"
        )
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = set(npz.files)
            missing = [k for k in REQUIRED_KEYS if k not in keys]
            if missing:
                raise DataError(
                    f"embeddings file '{path}' lacks {', '.join(repr(k) for k in missing)} "
                    f"(has {', '.join(sorted(keys)) or 'nothing'}); re-create it with `deepmetric embed`"
                )
            embeddings, labels = npz["embeddings"], npz["labels"]
            paths = npz["paths"] if "paths" in keys else None
    except DataError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(
            f"'{path}' is not a readable .npz embeddings file ({type(exc).__name__}); "
            "re-create it with `deepmetric embed`"
        ) from exc
    return validate_embedding_set(embeddings, labels, paths, source=f"embeddings file '{path}'")
