"""A saved, searchable index over an embeddings file (faiss): flat, IVF or HNSW.

``deepmetric index`` builds one from an embeddings ``.npz`` (see :mod:`deepmetric.embeddings_io`)
and reports the recall of the approximate index against exact search at build time;
``deepmetric search INDEX QUERY...`` queries it (the index file in place of an embeddings
file). The index file is faiss's own format; a JSON sidecar (``<index>.json``) records the
kind, metric and the gallery's labels and paths.

Choosing the kind (``kind="auto"``): exact ``flat`` search up to 50,000 items (a query is a
matrix-vector product, milliseconds at that size); ``hnsw`` (Malkov & Yashunin, TPAMI 2018;
graph search, high recall, no training) up to 2,000,000; ``ivf`` (inverted lists with
nlist = 4 sqrt(N) coarse centroids, k-means trained on 64 points per list) beyond, where HNSW's graph
would dominate memory.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deepmetric.errors import ConfigError, DataError, InputError

INDEX_KINDS = ("auto", "flat", "ivf", "hnsw")


def _faiss() -> Any:
    try:
        import faiss  # noqa: PLC0415 - optional dependency
    except ImportError as exc:
        raise ConfigError('building or loading an index needs faiss: pip install "deepmetric[faiss]"') from exc
    return faiss


def choose_kind(n_items: int) -> str:
    """The index kind ``"auto"`` picks for ``n_items`` (see module docstring)."""
    return "flat" if n_items <= 50_000 else "hnsw" if n_items <= 2_000_000 else "ivf"


def _prepare(x: np.ndarray, metric: str) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise InputError(f"embeddings must be 2-D (N x D), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise InputError("embeddings contain NaN or inf; re-embed with a healthy model")
    if metric == "cosine":
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x


@dataclass
class SearchIndex:
    """A faiss index plus what it indexes. Scores: cosine similarity (higher = closer) for
    ``metric="cosine"``, squared Euclidean distance (lower = closer) for ``"euclidean"``."""

    index: Any
    kind: str
    metric: str
    labels: list[Any] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    build_seconds: float = 0.0

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    def search(self, queries: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """``(indices (Q, k), scores (Q, k))`` of the k nearest gallery items, best first."""
        if k < 1:
            raise InputError(f"k must be >= 1, got {k}")
        q = _prepare(np.asarray(queries), self.metric)
        if q.shape[1] != self.index.d:
            raise InputError(f"queries have {q.shape[1]} dims but the index holds {self.index.d}-dim embeddings")
        scores, indices = self.index.search(q, min(k, self.size))
        return indices, scores

    def save(self, path: str | Path) -> Path:
        """Write the faiss index to ``path`` and the metadata to ``path + '.json'``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        _faiss().write_index(self.index, str(tmp))
        tmp.replace(path)
        meta = {"kind": self.kind, "metric": self.metric, "labels": [_plain(v) for v in self.labels],
                "paths": list(self.paths), "size": self.size, "dim": int(self.index.d)}
        meta_tmp = path.with_name(path.name + ".json.tmp")
        meta_tmp.write_text(json.dumps(meta))
        meta_tmp.replace(path.with_name(path.name + ".json"))
        return path

    @classmethod
    def load(cls, path: str | Path) -> SearchIndex:
        path = Path(path)
        meta_path = path.with_name(path.name + ".json")
        if not path.is_file() or not meta_path.is_file():
            raise DataError(f"index not found: {path} (and its {meta_path.name}); build it with 'deepmetric index'")
        meta = json.loads(meta_path.read_text())
        index = _faiss().read_index(str(path))
        if int(index.ntotal) != int(meta["size"]):
            raise DataError(f"index {path} holds {index.ntotal} items but its metadata says {meta['size']}; rebuild it")
        return cls(index, meta["kind"], meta["metric"], meta["labels"], meta["paths"])


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def build_index(
    embeddings: np.ndarray,
    kind: str = "auto",
    metric: str = "cosine",
    labels: list[Any] | None = None,
    paths: list[str] | None = None,
    nlist: int | None = None,
    nprobe: int = 16,
    hnsw_m: int = 32,
    ef_construction: int = 80,
    ef_search: int = 128,
    seed: int = 0,
) -> SearchIndex:
    """Build a :class:`SearchIndex` over ``embeddings (N, D)``."""
    if kind not in INDEX_KINDS:
        raise ConfigError(f"unknown index kind '{kind}'; use one of {', '.join(INDEX_KINDS)}")
    if metric not in ("cosine", "euclidean"):
        raise ConfigError(f"unknown metric '{metric}'; use 'cosine' or 'euclidean'")
    x = _prepare(np.asarray(embeddings), metric)
    n, dim = x.shape
    if n == 0:
        raise DataError("the embeddings file is empty; nothing to index")
    for name, values in (("labels", labels), ("paths", paths)):
        if values is not None and len(values) != n:
            raise DataError(f"{name} has {len(values)} entries but there are {n} embeddings; they must match")
    faiss = _faiss()
    kind = choose_kind(n) if kind == "auto" else kind
    fmetric = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
    start = time.perf_counter()
    if kind == "flat":
        index = faiss.IndexFlat(dim, fmetric)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, hnsw_m, fmetric)
        index.hnsw.efConstruction = ef_construction
        index.hnsw.efSearch = ef_search
    else:
        lists = nlist or max(1, min(n // 39, int(4 * math.sqrt(n))))
        if lists > n:
            raise ConfigError(f"nlist={lists} exceeds the {n} items; lower nlist")
        index = faiss.IndexIVFFlat(faiss.IndexFlat(dim, fmetric), dim, lists, fmetric)
        rng = np.random.default_rng(seed)
        sample = x[rng.choice(n, size=min(n, 64 * lists), replace=False)]  # faiss wants >= 39 per list
        index.train(sample)
        index.nprobe = min(nprobe, lists)
    index.add(x)
    return SearchIndex(index, kind, metric, list(labels or []), list(paths or []), time.perf_counter() - start)


def recall_against_exact(index: SearchIndex, embeddings: np.ndarray, k: int = 10, n_queries: int = 1000, seed: int = 0) -> float:
    """Mean fraction of the exact top-``k`` neighbours that the index also returns, for
    ``n_queries`` gallery items used as queries (1.0 for a flat index, up to ties)."""
    from deepmetric.evaluation.knn import knn_search

    x = _prepare(np.asarray(embeddings), index.metric)
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(x), size=min(n_queries, len(x)), replace=False)
    k = min(k, len(x))
    approx, _ = index.search(x[picks], k)
    exact = np.asarray(knn_search(x[picks], x, k, metric=index.metric, exclude_self=False).indices)
    hits = [len(set(a.tolist()) & set(e.tolist())) / k for a, e in zip(approx, exact)]
    return float(np.mean(hits))
