"""A saved, searchable index over embeddings (faiss): flat, IVF-Flat, IVF-PQ or HNSW.

``deepmetric index`` builds one from an embeddings ``.npz`` or a folder of shards (see
:mod:`deepmetric.deploy.index_build`, which streams the shards) and reports the recall of the
approximate index against exact search at build time; ``deepmetric search INDEX QUERY...``
queries it (the index file in place of an embeddings file).

Files of an index ``gallery.index``:

* ``gallery.index`` -- faiss's own format;
* ``gallery.index.json`` -- the sidecar, validated by :class:`IndexSidecar` (pydantic, unknown
  keys rejected): kind, metric, dim, count, the search parameters (``nprobe`` / ``ef_search``,
  ``rerank``), the recall measured at build time, the names of the two arrays below and the
  absolute path of the embeddings the index was built from (``source``, read by re-ranking).
  A damaged or hostile sidecar gives one :class:`~deepmetric.errors.DataError` line, never a
  traceback;
* ``gallery.index.labels.npy`` and ``gallery.index.paths.npy`` -- one label and one source path
  per indexed row, memory-mapped on load (only the rows of the hits are read).

Loading memory-maps what faiss can map (:data:`MMAP_SUPPORT`): the inverted lists of IVF-Flat
and IVF-PQ (``IO_FLAG_MMAP``), and the vectors of flat and HNSW indexes (``IO_FLAG_MMAP_IFC``,
faiss >= 1.10); HNSW's graph (about ``2 M`` int32 links per vector) is always read into memory.

Choosing the kind (``kind="auto"``, :func:`choose_kind`): exact ``flat`` search up to 50,000
items (a query is a matrix-vector product, milliseconds at that size); ``hnsw`` (Malkov &
Yashunin, TPAMI 2018; graph search, high recall, no training) up to 2,000,000; ``ivf``
(IVF-Flat: inverted lists over nlist = 4 sqrt(N) k-means centroids, full vectors) while the raw
float32 vectors take at most 16 GiB; ``ivfpq`` (IVF with product-quantised codes of ``pq_m``
bytes per vector) beyond.

Training sample (:func:`train_sample_size`): the coarse quantizer is trained on
``64 x nlist`` points (faiss warns below 39 per list; 64-256 is its advice), at least
``64 x 256`` for IVF-PQ (each 8-bit PQ codebook has 256 centroids), at most every item; the
sample is drawn with a seeded generator, so the same data and seed give the same index.

Scores: cosine similarity (higher = closer) for ``metric="cosine"``, squared Euclidean distance
(lower = closer) for ``"euclidean"``. Cosine normalisation is overflow-safe (:func:`prepare_vectors`:
each row is divided by its largest absolute value, then normalised in float64), so embeddings
scaled by 1e20 give the same neighbours and similarities; Euclidean distances that would
overflow float32 are refused. NaN or infinite rows are refused with the row number.

Exact re-ranking (``rerank=R``, ``deepmetric index/search --rerank R``): the approximate index
returns ``min(R k, N)`` candidates; their full vectors are read from the embeddings the index was
built from (the sidecar's ``source``: an ``.npz`` or shard folder, memory-mapped once per
:class:`SearchIndex`, only the candidate rows read; :class:`StoredRows`), prepared with
:func:`prepare_vectors` as the indexed vectors were, scored exactly (``q . x`` or ``|q - x|^2``,
in float64) and the best ``k`` are returned with those exact scores. Cost per query: up to
``R k`` random reads of ``dim x dtype bytes`` (50 KB at R k = 10 x 10, 128-d float32) and
``R k dim`` multiply-adds; no memory beyond the candidates' rows. It lifts IVF-PQ, whose
compressed codes cap recall well below 1 (16 bytes for 128-d: recall@10 about 0.5 on hard data),
to the recall of its candidate list; flat, IVF-Flat and HNSW already score exactly. The source
must stay in place with the same rows: a missing, unreadable or differently shaped one is a
one-line :class:`~deepmetric.errors.DataError`.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from deepmetric.errors import ConfigError, DataError, DeepMetricError, InputError
from deepmetric.messages import safe_text, schema_problem

if TYPE_CHECKING:
    from deepmetric.shard_store import ShardSet

__all__ = [
    "INDEX_KINDS",
    "MMAP_SUPPORT",
    "IndexSidecar",
    "SearchIndex",
    "StoredRows",
    "best_k",
    "build_index",
    "choose_kind",
    "default_nlist",
    "default_pq_m",
    "exact_candidate_scores",
    "new_faiss_index",
    "open_stored_rows",
    "prepare_vectors",
    "read_sidecar",
    "recall_against_exact",
    "rerank_factor",
    "safe_text",
    "schema_problem",
    "set_search_params",
    "train_sample_size",
    "write_faiss_atomically",
]

INDEX_KINDS = ("auto", "flat", "ivf", "ivfpq", "hnsw")
Kind = Literal["flat", "ivf", "ivfpq", "hnsw"]
Metric = Literal["cosine", "euclidean"]
#: how each kind is opened by :meth:`SearchIndex.load` with ``mmap=True``
MMAP_SUPPORT = {
    "flat": "vectors memory-mapped (IO_FLAG_MMAP_IFC, faiss >= 1.10; read into memory before)",
    "ivf": "inverted lists memory-mapped (IO_FLAG_MMAP); the coarse centroids are read",
    "ivfpq": "inverted lists (codes) memory-mapped (IO_FLAG_MMAP); centroids and codebooks are read",
    "hnsw": "vectors memory-mapped (IO_FLAG_MMAP_IFC, faiss >= 1.10); the graph links are read into memory",
}
#: the largest sidecar read (a legacy sidecar holds the labels and paths inline)
MAX_SIDECAR_BYTES = 256 * 1024 * 1024
#: raw float32 vectors up to this size make ``auto`` pick IVF-Flat over IVF-PQ
_IVF_FLAT_LIMIT_BYTES = 16 * 2**30
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_ARRAY_FILE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,200}\.npy$")
#: candidate rows scored at once while re-ranking (bounds the float64 working set to ~16k x dim x 8 bytes)
_RERANK_BLOCK = 16_384


def _faiss() -> Any:
    try:
        import faiss  # noqa: PLC0415 - optional dependency
    except ImportError as exc:
        raise ConfigError('building or loading an index needs faiss: pip install "deepmetric[faiss]"') from exc
    return faiss


# ---------------------------------------------------------------------------------------------
# choices and sizes


def choose_kind(n_items: int, dim: int = 128) -> str:
    """The index kind ``"auto"`` picks for ``n_items`` vectors of ``dim`` (see module docstring)."""
    if n_items <= 50_000:
        return "flat"
    if n_items <= 2_000_000:
        return "hnsw"
    return "ivf" if n_items * dim * 4 <= _IVF_FLAT_LIMIT_BYTES else "ivfpq"


def default_nlist(n_items: int) -> int:
    """``4 sqrt(N)`` inverted lists, at most ``N / 39`` (faiss wants >= 39 training points per list)."""
    return max(1, min(n_items // 39, int(4 * math.sqrt(n_items))))


def default_pq_m(dim: int) -> int:
    """PQ sub-quantizers (bytes per vector at 8 bits): the largest divisor of ``dim`` up to ``dim / 8``
    (at least 8 dimensions per sub-quantizer: 16 bytes for 128-d; 4-d sub-quantizers train ~10x
    slower in faiss for little recall)."""
    return max(m for m in range(1, max(1, dim // 8) + 1) if dim % m == 0)


def train_sample_size(n_items: int, nlist: int, kind: str, points_per_list: int = 64) -> int:
    """Points the IVF quantizer (and PQ codebooks) train on: ``points_per_list x nlist``, at least
    ``64 x 256`` for IVF-PQ, at most ``n_items``."""
    want = points_per_list * nlist
    if kind == "ivfpq":
        want = max(want, 64 * 256)
    return min(n_items, want)


# ---------------------------------------------------------------------------------------------
# vectors


def prepare_vectors(x: Any, metric: str, source: str = "embeddings", first_row: int = 0) -> np.ndarray:
    """Contiguous float32 rows ready for faiss: unit rows for cosine, unchanged for Euclidean.

    Cosine: every row is divided by its largest absolute value, then normalised in float64, so
    no finite input overflows (1e20 x gives the rows of x). Raises :class:`InputError` naming
    ``source`` and the row (``first_row`` + position) for NaN/inf, and for Euclidean inputs
    whose squared distances would overflow float32.
    """
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise InputError(f"{source}: embeddings must be 2-D (N x D), got shape {arr.shape}")
    if arr.dtype.kind not in "fiu":
        raise InputError(f"{source}: embeddings must be real numbers, got dtype {arr.dtype}")
    if arr.dtype.kind == "f":
        finite = np.isfinite(arr).all(axis=1)
        if not finite.all():
            row = first_row + int(np.flatnonzero(~finite)[0])
            raise InputError(f"{source}: row {row} holds NaN or inf; re-embed it with a healthy model "
                             "(a diverged checkpoint gives NaN)")
    if metric == "cosine":
        x64 = arr.astype(np.float64)
        scale = np.abs(x64).max(axis=1, keepdims=True) if x64.size else np.ones((len(x64), 1))
        x64 /= np.where(scale > 0, scale, 1.0)
        norm = np.linalg.norm(x64, axis=1, keepdims=True)
        return np.ascontiguousarray(x64 / np.where(norm > 0, norm, 1.0), dtype=np.float32)
    if arr.size:
        limit = math.sqrt(_FLOAT32_MAX / arr.shape[1]) / 2  # |a - b|^2 <= dim (2 max|x|)^2 must fit float32
        big = np.abs(arr).max(axis=1) > limit
        if big.any():
            row = first_row + int(np.flatnonzero(big)[0])
            raise InputError(
                f"{source}: row {row} has values up to {float(np.abs(arr[row - first_row]).max()):.3g}, so squared "
                "Euclidean distances overflow float32; divide all embeddings by one common factor or use --metric cosine"
            )
    return np.ascontiguousarray(arr, dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# faiss indexes


def _faiss_metric(metric: str) -> int:
    faiss = _faiss()
    return faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2


def new_faiss_index(
    kind: str, dim: int, metric: str, nlist: int | None = None, pq_m: int | None = None, pq_bits: int = 8,
    hnsw_m: int = 32, ef_construction: int = 80,
) -> Any:
    """An empty faiss index of ``kind`` (``flat``, ``ivf``, ``ivfpq`` or ``hnsw``); IVF kinds need
    training (``index.train(sample)``) before ``add``."""
    faiss = _faiss()
    fmetric = _faiss_metric(metric)
    if kind == "flat":
        return faiss.IndexFlat(dim, fmetric)
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, hnsw_m, fmetric)
        index.hnsw.efConstruction = ef_construction
        return index
    if nlist is None or nlist < 1:
        raise ConfigError(f"an {kind} index needs nlist >= 1, got {nlist}")
    quantizer = faiss.IndexFlat(dim, fmetric)
    if kind == "ivf":
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, fmetric)
    elif kind == "ivfpq":
        m = pq_m or default_pq_m(dim)
        if dim % m:
            raise ConfigError(f"--pq-m {m} must divide the embedding dimension {dim}; use a divisor such as {default_pq_m(dim)}")
        index = faiss.IndexIVFPQ(quantizer, dim, nlist, m, pq_bits, fmetric)
    else:
        raise ConfigError(f"unknown index kind '{kind}'; use one of {', '.join(INDEX_KINDS)}")
    return index


def set_search_params(index: Any, kind: str, nprobe: int | None = None, ef_search: int | None = None) -> None:
    """Set ``nprobe`` (IVF kinds, clipped to nlist) or ``efSearch`` (HNSW) on a faiss index."""
    if kind in ("ivf", "ivfpq") and nprobe is not None:
        _faiss().extract_index_ivf(index).nprobe = int(min(nprobe, index.nlist))
    elif kind == "hnsw" and ef_search is not None:
        index.hnsw.efSearch = int(ef_search)


def _expected_class(kind: str) -> Any:
    faiss = _faiss()
    return {"flat": faiss.IndexFlat, "ivf": faiss.IndexIVFFlat, "ivfpq": faiss.IndexIVFPQ, "hnsw": faiss.IndexHNSW}[kind]


# ---------------------------------------------------------------------------------------------
# sidecar


class IndexSidecar(BaseModel):
    """``<index>.json``: what the faiss file holds and how to search it. Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

    format: Literal[1] = 1
    kind: Kind
    metric: Metric
    dim: int = Field(gt=0, le=1_000_000)
    count: int = Field(ge=0, le=10**13)
    nlist: int | None = Field(default=None, ge=1, le=10**8)
    nprobe: int | None = Field(default=None, ge=1, le=10**8)
    pq_m: int | None = Field(default=None, ge=1, le=10_000)
    pq_bits: int | None = Field(default=None, ge=1, le=16)
    hnsw_m: int | None = Field(default=None, ge=2, le=10_000)
    ef_search: int | None = Field(default=None, ge=1, le=1_000_000)
    labels_file: str | None = Field(default=None, max_length=205)
    paths_file: str | None = Field(default=None, max_length=205)
    recall_at_10: float | None = Field(default=None, ge=0.0, le=1.0)
    recall_queries: int | None = Field(default=None, ge=0)
    target_recall: float | None = Field(default=None, gt=0.0, le=1.0)
    train_sample: int | None = Field(default=None, ge=0)
    seed: int | None = None
    build_seconds: float | None = Field(default=None, ge=0.0)
    source: str | None = Field(default=None, max_length=4096)
    rerank: int | None = Field(default=None, ge=0, le=1_000_000)

    @model_validator(mode="after")
    def _consistent(self) -> IndexSidecar:
        ivf = self.kind in ("ivf", "ivfpq")
        if ivf and self.nlist is None:
            raise ValueError(f"an {self.kind} index needs 'nlist'")
        if self.nprobe is not None and (not ivf or self.nprobe > (self.nlist or 0)):
            raise ValueError("'nprobe' needs an IVF kind and must lie in 1..nlist")
        if self.ef_search is not None and self.kind != "hnsw":
            raise ValueError("'ef_search' is only for an hnsw index")
        if self.kind == "ivfpq" and (self.pq_m is None or self.dim % self.pq_m):
            raise ValueError("an ivfpq index needs 'pq_m' dividing 'dim'")
        for key in ("labels_file", "paths_file"):
            name = getattr(self, key)
            if name is not None and (not _ARRAY_FILE.match(name) or ".." in name):
                raise ValueError(f"'{key}' must be a plain .npy file name next to the index (no folders)")
        return self


class _LegacySidecar(BaseModel):
    """The sidecar of deepmetric before format 1 (labels and paths inline)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["flat", "ivf", "hnsw"]
    metric: Metric
    labels: list[int | str]
    paths: list[str]
    size: int = Field(ge=0)
    dim: int = Field(gt=0, le=1_000_000)


def _sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def read_sidecar(path: str | Path) -> IndexSidecar | _LegacySidecar:
    """The validated sidecar of the index file ``path`` (``path + '.json'``).

    Raises :class:`DataError`, one line naming the file and the first problem, for a missing,
    oversized, non-UTF-8, non-JSON or off-schema sidecar. Pre-format-1 sidecars (labels and
    paths inline) are accepted as they are.
    """
    path = Path(path)
    meta = _sidecar_path(path)
    fix = "rebuild it with `deepmetric index EMBEDDINGS -o " + safe_text(path.name, 80) + "`"
    if not path.is_file() or not meta.is_file():
        raise DataError(f"index not found: {safe_text(path)} (and its {safe_text(meta.name)}); build it with 'deepmetric index'")
    size = meta.stat().st_size
    if size > MAX_SIDECAR_BYTES:
        raise DataError(f"index sidecar '{safe_text(meta)}' is {size / 2**20:.0f} MiB, over the "
                        f"{MAX_SIDECAR_BYTES // 2**20} MiB limit; it is not a sidecar deepmetric wrote: {fix}")
    try:
        data = json.loads(meta.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise DataError(f"index sidecar '{safe_text(meta)}' is not UTF-8 text; {fix}") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"index sidecar '{safe_text(meta)}' is not valid JSON ({exc.msg} at line {exc.lineno}); {fix}") from None
    except RecursionError:
        raise DataError(f"index sidecar '{safe_text(meta)}' is nested too deeply to be a sidecar; {fix}") from None
    if not isinstance(data, dict):
        raise DataError(f"index sidecar '{safe_text(meta)}' must hold a JSON object, not {type(data).__name__}; {fix}")
    legacy = "format" not in data and ("size" in data or "labels" in data)
    model: type[BaseModel] = _LegacySidecar if legacy else IndexSidecar
    try:
        return model.model_validate(data, strict=True)  # type: ignore[return-value]
    except ValidationError as exc:
        raise DataError(f"index sidecar '{safe_text(meta)}' does not match the schema: {schema_problem(exc)}; {fix}") from None


# ---------------------------------------------------------------------------------------------
# exact re-ranking


def rerank_factor(value: Any) -> int:
    """The candidate multiple ``R`` of re-ranking as an int >= 0 (``None`` and 0: off); raises
    :class:`ConfigError` for anything else (a bool, a float, a negative number)."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ConfigError(f"rerank must be a whole number >= 0 (R x k candidates re-scored exactly; 0 = off), "
                          f"got {safe_text(repr(value), 40)}")
    return int(value)


def best_k(ids: np.ndarray, scores: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the ``k`` best ``(ids, scores)`` among the columns: highest score first for cosine,
    lowest first for Euclidean, equal scores by the lower id, ``-1`` ids last."""
    sign = -1.0 if metric == "cosine" else 1.0
    key = np.where(ids < 0, np.inf, sign * scores.astype(np.float64))
    tie = np.where(ids < 0, np.iinfo(np.int64).max, ids)
    order = np.lexsort((tie, key), axis=-1)[:, :k]
    return np.take_along_axis(ids, order, axis=1), np.take_along_axis(scores, order, axis=1)


def exact_candidate_scores(queries: np.ndarray, vectors: np.ndarray, metric: str) -> np.ndarray:
    """Exact float64 scores ``(Q, C)`` of prepared ``queries (Q, D)`` against their candidates'
    prepared ``vectors (Q, C, D)``: ``sum_d q_d x_d`` for cosine (unit rows: the cosine similarity,
    higher = closer), ``sum_d (q_d - x_d)^2`` for Euclidean (lower = closer)."""
    q = np.asarray(queries, dtype=np.float64)
    x = np.asarray(vectors, dtype=np.float64)
    if metric == "cosine":
        return np.einsum("qcd,qd->qc", x, q)
    diff = x - q[:, None, :]
    return np.einsum("qcd,qcd->qc", diff, diff)


class StoredRows:
    """The full vectors of an index's rows, read from the embeddings it was built from.

    Every shard's ``embeddings`` array is memory-mapped once, on construction; :meth:`rows`
    reads only the rows asked for and prepares them with :func:`prepare_vectors` for the index's
    metric, as the build prepared the indexed vectors (row by row, so identically).
    """

    def __init__(self, data: ShardSet, metric: str, where: str) -> None:
        self.data = data
        self.metric = metric
        self.where = where
        self.arrays = data.embedding_arrays()

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """Prepared float32 vectors ``(len(ids), dim)`` of the global rows ``ids``."""
        ids = np.asarray(ids, dtype=np.int64)
        raw = self.data.take(ids, self.arrays)
        if raw.dtype.kind == "f":
            finite = np.isfinite(raw).all(axis=1)
            if not finite.all():
                row = int(ids[np.flatnonzero(~finite)[0]])
                raise DataError(f"{self.where}: row {row} holds NaN or inf but the index was built from finite "
                                "embeddings (they were replaced); rebuild the index, or pass --rerank 0")
        return prepare_vectors(raw, self.metric, source=self.where)


def open_stored_rows(source: str | Path | ShardSet | None, metric: str, count: int, dim: int) -> StoredRows:
    """:class:`StoredRows` over ``source`` (a path, or an open ShardSet), which must hold
    ``count`` rows of ``dim`` stored so they can be memory-mapped. Raises :class:`DataError`, one
    line naming the problem and the fix, otherwise."""
    from deepmetric.shard_store import ShardSet, open_embeddings

    what = "re-ranking reads the full vectors from the embeddings the index was built from"
    if source is None:
        raise DataError(f"{what}, but this index records none (built in memory or by an older deepmetric); pass "
                        "--rerank 0, or rebuild it with `deepmetric index EMBEDDINGS -o INDEX --rerank R`")
    where = safe_text(source.location if isinstance(source, ShardSet) else source, 300)
    fix = f"pass --rerank 0, or put the embeddings the index was built from back at {where}"
    data = source
    if not isinstance(data, ShardSet):
        try:
            present = Path(data).exists()
        except OSError:
            present = False
        if not present:
            raise DataError(f"{what} ({where}), but they are missing; {fix}")
        try:
            data = open_embeddings(data)
        except DeepMetricError as exc:
            reason = safe_text(str(exc).split(";")[0], 200)
            raise DataError(f"{what} ({where}), but they cannot be read ({reason}); {fix}") from None
    if len(data) != count or data.dim != dim:
        raise DataError(f"{what} ({where}), but they hold {len(data)} x {data.dim} embeddings and the index "
                        f"{count} x {dim} (replaced since the build); {fix}, or rebuild the index")
    try:
        stored = StoredRows(data, metric, where)
    except DeepMetricError as exc:
        raise DataError(f"{what} ({where}), but they cannot be read ({safe_text(str(exc).split(';')[0], 200)}); "
                        f"{fix}") from None
    if any(a.size and not isinstance(a, np.memmap) for a in stored.arrays):
        raise DataError(f"{what} ({where}), but they are stored compressed, so every search would read them whole; "
                        "save them uncompressed (as `deepmetric embed` does), or pass --rerank 0")
    return stored


def _rerank_block(rows: StoredRows, queries: np.ndarray, candidates: np.ndarray, k: int,
                  metric: str) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` of each query's ``candidates`` (``-1``: none) by exact score; each distinct
    candidate row is read once."""
    valid = candidates >= 0
    unique, where = np.unique(candidates[valid], return_inverse=True)
    exact = np.zeros(candidates.shape, dtype=np.float64)
    if len(unique):
        position = np.zeros(candidates.shape, dtype=np.int64)
        position[valid] = where
        exact = exact_candidate_scores(queries, rows.rows(unique)[position], metric)
    missing = -_FLOAT32_MAX if metric == "cosine" else _FLOAT32_MAX  # what faiss reports for no hit
    ids, scores = best_k(candidates, np.where(valid, exact, missing), k, metric)
    return ids, scores.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# the index object


def _replace_atomically(path: Path, write: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_faiss_atomically(index: Any, path: str | Path) -> Path:
    """Write a faiss index to ``path`` through a temporary file and ``os.replace``."""
    path = Path(path)
    _replace_atomically(path, lambda tmp: _faiss().write_index(index, tmp))
    return path


def _array_of(values: Sequence[Any]) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype.kind not in "iuU":
        arr = np.asarray([str(v) for v in values], dtype=str)
    return arr


@dataclass
class SearchIndex:
    """A faiss index plus what it indexes (see module docstring for the scores).

    ``labels`` and ``paths`` hold one entry per indexed row (lists when built in memory,
    memory-mapped arrays when loaded), or are empty when unknown. ``source`` (the embeddings the
    index was built from: a path or an open ShardSet) and ``rerank`` (the default candidate
    multiple, 0 or None = off) serve exact re-ranking; the source is opened on first use, once.
    """

    index: Any
    kind: str
    metric: str
    labels: Sequence[Any] = field(default_factory=list)
    paths: Sequence[Any] = field(default_factory=list)
    build_seconds: float = 0.0
    nprobe: int | None = None
    ef_search: int | None = None
    sidecar: IndexSidecar | None = None
    source: str | Path | ShardSet | None = None
    rerank: int | None = None
    _stored: StoredRows | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def search(self, queries: np.ndarray, k: int = 10, rerank: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(indices (Q, k), scores (Q, k))`` of the k nearest gallery items, best first
        (index -1 where the index found fewer than k).

        ``rerank`` R >= 1: the index returns ``min(R k, N)`` candidates, which are re-scored
        exactly from the source embeddings (module docstring) and the best ``k`` returned with
        their exact scores; 0 turns it off; ``None`` uses :attr:`rerank` (the sidecar's)."""
        if k < 1:
            raise InputError(f"k must be >= 1, got {k}")
        q = prepare_vectors(np.asarray(queries), self.metric, source="queries")
        if q.shape[1] != self.index.d:
            raise InputError(f"queries have {q.shape[1]} dims but the index holds {self.index.d}-dim embeddings")
        return self.search_prepared(q, k, rerank)

    def search_prepared(self, queries: np.ndarray, k: int, rerank: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`search` of float32 rows already prepared with :func:`prepare_vectors` for this
        metric (no copy, no checks; the build measures recall with it)."""
        factor = rerank_factor(self.rerank if rerank is None else rerank)
        k = min(k, self.size)
        if factor == 0:
            scores, indices = self.index.search(queries, k)
            return indices, scores
        _, candidates = self.index.search(queries, min(factor * k, self.size))
        return self._rerank(queries, candidates, k)

    def stored_rows(self) -> StoredRows:
        """The source embeddings' rows for re-ranking (:func:`open_stored_rows`), opened on first
        use and kept."""
        if self._stored is None:
            self._stored = open_stored_rows(self.source, self.metric, self.size, self.dim)
        return self._stored

    def _rerank(self, queries: np.ndarray, candidates: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The best ``k`` of ``candidates (Q, C)`` by exact score, for blocks of queries holding
        at most :data:`_RERANK_BLOCK` candidates."""
        rows = self.stored_rows()
        ids = np.empty((len(queries), k), dtype=np.int64)
        scores = np.empty((len(queries), k), dtype=np.float32)
        step = max(1, _RERANK_BLOCK // max(1, candidates.shape[1]))
        for lo in range(0, len(queries), step):
            hi = lo + step
            ids[lo:hi], scores[lo:hi] = _rerank_block(rows, queries[lo:hi], candidates[lo:hi], k, self.metric)
        return ids, scores

    def hits(self, queries: np.ndarray, k: int = 5, rerank: int | None = None) -> list[list[Any]]:
        """:class:`~deepmetric.inference.SearchHit` lists (best first) for every query row; only
        the labels and paths of the hits are read (``rerank``: as in :meth:`search`)."""
        from deepmetric.inference import SearchHit

        indices, scores = self.search(queries, k, rerank)
        return [[SearchHit(rank + 1, self.path(i), self.label(i), float(s))
                 for rank, (i, s) in enumerate(zip(row_i.tolist(), row_s.tolist())) if i >= 0]
                for row_i, row_s in zip(np.asarray(indices), np.asarray(scores))]

    def label(self, row: int) -> str:
        return str(self.labels[row]) if len(self.labels) else ""

    def path(self, row: int) -> str:
        return str(self.paths[row]) if len(self.paths) else ""

    def save(self, path: str | Path, **extra: Any) -> Path:
        """Write the faiss index to ``path``, the labels and paths next to it and the sidecar
        last (``extra``: further :class:`IndexSidecar` fields such as ``recall_at_10``)."""
        path = Path(path)
        write_faiss_atomically(self.index, path)
        files: dict[str, str | None] = {"labels_file": None, "paths_file": None}
        for key, values in (("labels_file", self.labels), ("paths_file", self.paths)):
            if len(values):
                name = f"{path.name}.{key.split('_')[0]}.npy"
                arr = _array_of(values)
                _replace_atomically(path.with_name(name), lambda tmp, arr=arr: _save_npy(tmp, arr))
                files[key] = name
        self.write_sidecar(path, **files, **extra)
        return path

    def write_sidecar(self, path: str | Path, **fields: Any) -> IndexSidecar:
        """Validate and atomically write the sidecar of ``path`` from this index and ``fields``."""
        from deepmetric.run_files import write_run_file

        ivf = _faiss().extract_index_ivf(self.index) if self.kind in ("ivf", "ivfpq") else None
        base: dict[str, Any] = {
            "kind": self.kind, "metric": self.metric, "dim": self.dim, "count": self.size,
            "nlist": int(ivf.nlist) if ivf is not None else None,
            "nprobe": int(ivf.nprobe) if ivf is not None else None,
            "ef_search": int(self.index.hnsw.efSearch) if self.kind == "hnsw" else None,
            "hnsw_m": int(self.index.hnsw.nb_neighbors(1)) if self.kind == "hnsw" else None,
            "pq_m": int(self.index.pq.M) if self.kind == "ivfpq" else None,
            "pq_bits": int(self.index.pq.nbits) if self.kind == "ivfpq" else None,
            "build_seconds": round(self.build_seconds, 3),
            "rerank": self.rerank,
        }
        sidecar = IndexSidecar(**{**base, **fields})
        write_run_file(sidecar, _sidecar_path(Path(path)))
        self.sidecar = sidecar
        return sidecar

    @classmethod
    def load(cls, path: str | Path, mmap: bool = True) -> SearchIndex:
        """Open a saved index; with ``mmap`` what faiss can map is mapped (:data:`MMAP_SUPPORT`).
        Raises :class:`DataError` (one line) when the files are missing, damaged or disagree."""
        path = Path(path)
        meta = read_sidecar(path)
        faiss = _faiss()
        flags = 0
        if mmap:
            flags = getattr(faiss, "IO_FLAG_MMAP", 0) if meta.kind in ("ivf", "ivfpq") else getattr(faiss, "IO_FLAG_MMAP_IFC", 0)
        fix = f"rebuild it with `deepmetric index EMBEDDINGS -o {safe_text(path.name, 80)}`"
        try:
            index = faiss.read_index(str(path), flags)
        except RuntimeError as exc:
            first = safe_text(str(exc).strip().splitlines()[0] if str(exc).strip() else "unreadable", 160)
            raise DataError(f"index file '{safe_text(path)}' cannot be read by faiss ({first}); {fix}") from None
        if isinstance(meta, _LegacySidecar):
            if int(index.ntotal) != meta.size or len(meta.labels) not in (0, meta.size) or len(meta.paths) not in (0, meta.size):
                raise DataError(f"index {safe_text(path)} holds {index.ntotal} items but its metadata says {meta.size}; {fix}")
            return cls(index, meta.kind, meta.metric, meta.labels, meta.paths)
        problem = None
        if not isinstance(index, _expected_class(meta.kind)):
            problem = f"the sidecar says kind '{meta.kind}' but the file holds a {type(index).__name__}"
        elif int(index.metric_type) != _faiss_metric(meta.metric):
            problem = f"the sidecar says metric '{meta.metric}' but the faiss index uses another metric"
        elif int(index.d) != meta.dim or int(index.ntotal) != meta.count:
            problem = (f"the file holds {index.ntotal} items of dimension {index.d} but the sidecar says "
                       f"{meta.count} of dimension {meta.dim}")
        elif meta.nlist is not None and int(faiss.extract_index_ivf(index).nlist) != meta.nlist:
            problem = f"the sidecar says nlist {meta.nlist} but the file has {faiss.extract_index_ivf(index).nlist}"
        if problem:
            raise DataError(f"index {safe_text(path)} does not match its sidecar: {problem}; {fix}")
        labels = _load_column(path, meta.labels_file, meta.count, "labels", fix)
        paths = _load_column(path, meta.paths_file, meta.count, "paths", fix)
        set_search_params(index, meta.kind, meta.nprobe, meta.ef_search)
        return cls(index, meta.kind, meta.metric, labels, paths, meta.build_seconds or 0.0,
                   meta.nprobe, meta.ef_search, meta, source=meta.source, rerank=meta.rerank)


def _save_npy(tmp: str, arr: np.ndarray) -> None:
    with open(tmp, "wb") as handle:
        np.save(handle, arr, allow_pickle=False)
        handle.flush()
        os.fsync(handle.fileno())


def _load_column(path: Path, name: str | None, count: int, what: str, fix: str) -> Sequence[Any]:
    if name is None:
        return []
    file = path.with_name(name)
    try:
        arr = np.load(file, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"the {what} of index {safe_text(path)} ({safe_text(name)}) are missing; {fix}") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"the {what} file {safe_text(name)} of index {safe_text(path)} is unreadable "
                        f"({type(exc).__name__}); {fix}") from None
    if arr.ndim != 1 or arr.shape[0] != count or arr.dtype.kind not in "iuU":
        raise DataError(f"the {what} file {safe_text(name)} holds shape {arr.shape} of {arr.dtype}, not {count} "
                        f"integers or strings; {fix}")
    return arr


# ---------------------------------------------------------------------------------------------
# building in memory


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
    pq_m: int | None = None,
    pq_bits: int = 8,
) -> SearchIndex:
    """Build a :class:`SearchIndex` over ``embeddings (N, D)`` held in memory (for shards or
    files larger than memory use :func:`deepmetric.deploy.index_build.build_index_from_source`)."""
    if kind not in INDEX_KINDS:
        raise ConfigError(f"unknown index kind '{kind}'; use one of {', '.join(INDEX_KINDS)}")
    if metric not in ("cosine", "euclidean"):
        raise ConfigError(f"unknown metric '{metric}'; use 'cosine' or 'euclidean'")
    x = prepare_vectors(np.asarray(embeddings), metric)
    n, dim = x.shape
    if n == 0:
        raise DataError("the embeddings file is empty; nothing to index")
    for name, values in (("labels", labels), ("paths", paths)):
        if values is not None and len(values) != n:
            raise DataError(f"{name} has {len(values)} entries but there are {n} embeddings; they must match")
    kind = choose_kind(n, dim) if kind == "auto" else kind
    lists = None
    if kind in ("ivf", "ivfpq"):
        lists = nlist or default_nlist(n)
        if lists > n:
            raise ConfigError(f"nlist={lists} exceeds the {n} items; lower nlist")
    start = time.perf_counter()
    index = new_faiss_index(kind, dim, metric, lists, pq_m, pq_bits, hnsw_m, ef_construction)
    if lists is not None:
        sample_n = train_sample_size(n, lists, kind)
        check_pq_sample(kind, sample_n, pq_bits)
        rng = np.random.default_rng(seed)
        index.train(x[np.sort(rng.choice(n, size=sample_n, replace=False))])
    index.add(x)
    set_search_params(index, kind, nprobe, ef_search)
    return SearchIndex(index, kind, metric, list(labels or []), list(paths or []), time.perf_counter() - start,
                       nprobe if lists else None, ef_search if kind == "hnsw" else None)


def check_pq_sample(kind: str, sample: int, pq_bits: int = 8) -> None:
    """Raise :class:`ConfigError` when an IVF-PQ codebook of ``2**pq_bits`` centroids would train
    on fewer than 39 points per centroid."""
    if kind == "ivfpq" and sample < 39 * 2**pq_bits:
        raise ConfigError(f"IVF-PQ with {pq_bits}-bit codes trains on at least {39 * 2**pq_bits} items, only {sample} "
                          "are available; use --kind ivf (or flat) for a gallery this small")


def recall_against_exact(index: SearchIndex, embeddings: np.ndarray, k: int = 10, n_queries: int = 1000, seed: int = 0) -> float:
    """Mean fraction of the exact top-``k`` neighbours that the index also returns, for
    ``n_queries`` gallery items used as queries (1.0 for a flat index, up to ties)."""
    x = prepare_vectors(np.asarray(embeddings), index.metric)
    rng = np.random.default_rng(seed)
    picks = np.sort(rng.choice(len(x), size=min(n_queries, len(x)), replace=False))
    k = min(k, len(x))
    approx, _ = index.search(x[picks], k)
    exact = new_faiss_index("flat", x.shape[1], index.metric)
    exact.add(x)
    _, truth = exact.search(x[picks], k)
    return recall_of(approx, truth)


def recall_of(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over rows of ``|found_row & truth_row| / k`` (``-1`` entries never match)."""
    k = truth.shape[1]
    hits = [len(set(a.tolist()) & set(t.tolist()) - {-1}) / k for a, t in zip(found, truth)]
    return float(np.mean(hits)) if hits else 1.0
