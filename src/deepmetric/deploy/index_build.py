"""Build a faiss index from embeddings that need not fit in memory: a shard folder or an ``.npz``.

``deepmetric index SOURCE -o gallery.index --kind auto|flat|ivf|ivfpq|hnsw [--nlist N] [--pq-m M]
[--target-recall 0.95] [--rerank R]`` calls :func:`build_index_from_source`. ``SOURCE`` is a folder written by
``deepmetric embed ... -o OUT_DIR`` (:func:`deepmetric.deploy.sharded_embed.load_shards`) or a
single embeddings file; either is read through memory maps, block by block:

1. **Train** (IVF kinds): the coarse quantizer (and, for IVF-PQ, the PQ codebooks) is trained on
   a seeded sample of :func:`~deepmetric.search_index.train_sample_size` rows (64 per inverted
   list, at least 16,384 for IVF-PQ), gathered row by row from the shards.
2. **Add**: the shards are added block by block (``block_rows``, default 65,536), each block
   normalised on its own (cosine, overflow-safe: :func:`~deepmetric.search_index.prepare_vectors`);
   a NaN or infinite row is a one-line error naming the shard file and the row. The labels and
   paths are streamed into ``<index>.labels.npy`` / ``<index>.paths.npy`` in the same pass.
   Peak memory: the index being built, one block and the training sample; never every shard.
3. **Measure**: ``n_queries`` (default 1,000) gallery rows drawn with the seed are searched
   exactly (:func:`exact_search`: faiss flat search over one block at a time, running top-k
   merged across blocks: the true neighbours, ties broken by the lower index) and with the
   index; recall@k is the mean overlap of the two top-k lists.
4. **Tune** (``target_recall``): ``nprobe`` (IVF) or ``efSearch`` (HNSW) is set to the smallest
   value whose recall@k on that sample reaches the target (doubling, then bisection; this assumes
   recall does not fall as the value grows, which holds for IVF-Flat and, in practice, for
   IVF-PQ and HNSW). When even ``nlist`` / :data:`MAX_EF_SEARCH` misses the target (IVF-PQ's
   recall levels off at what its codes can tell apart: raise ``--pq-m``), the smallest value
   measured with the best recall is kept and the report says so. An explicit ``nprobe`` / ``ef_search`` skips tuning.
   With ``rerank`` R > 0, steps 3 and 4 measure the re-ranked search
   (:meth:`~deepmetric.search_index.SearchIndex.search_prepared`: ``R k`` candidates re-scored
   exactly from ``SOURCE``), so the value chosen is the smallest reaching the target *with*
   re-ranking.
5. **Write** the index, its arrays and the validated sidecar
   (:class:`~deepmetric.search_index.IndexSidecar`: recall, sample size, chosen parameter,
   ``rerank`` and the absolute path of ``SOURCE``, which searches re-rank from).

Re-ranking (``--rerank R``, for IVF-PQ: its 8-bit codes cap recall@10 near 0.5 on hard data)
costs each query up to ``R k`` random reads of ``dim x dtype bytes`` from ``SOURCE`` and no
memory beyond those rows; ``SOURCE`` must stay where it was (see :mod:`deepmetric.search_index`).

The same source and seed always give the same index: a shard folder and the merged ``.npz`` of
the same embeddings give identical indexes (the sample is drawn by global row number).
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deepmetric.deploy.sharded_embed import ShardSet, open_embeddings
from deepmetric.errors import ConfigError
from deepmetric.search_index import (
    INDEX_KINDS,
    SearchIndex,
    best_k,
    check_pq_sample,
    choose_kind,
    default_nlist,
    new_faiss_index,
    open_stored_rows,
    prepare_vectors,
    recall_of,
    rerank_factor,
    set_search_params,
    train_sample_size,
)

__all__ = ["MAX_EF_SEARCH", "IndexReport", "build_index_from_source", "exact_search", "search_shards", "tune_search_param"]

#: the largest efSearch tried when tuning an HNSW index
MAX_EF_SEARCH = 4096


@dataclass
class IndexReport:
    """What :func:`build_index_from_source` built and measured."""

    output: Path
    kind: str
    metric: str
    count: int
    dim: int
    nlist: int | None
    nprobe: int | None
    ef_search: int | None
    recall: float
    k: int
    query_rows: np.ndarray
    train_sample: int
    target_recall: float | None
    target_reached: bool | None
    recall_by_value: dict[int, float] = field(default_factory=dict)
    train_seconds: float = 0.0
    add_seconds: float = 0.0
    measure_seconds: float = 0.0
    rerank: int = 0

    @property
    def build_seconds(self) -> float:
        return self.train_seconds + self.add_seconds

    def summary(self) -> str:
        """One line for the command's output."""
        what = f"{self.kind} index of {self.count} items"
        if self.nlist is not None:
            what += f" (nlist {self.nlist}, nprobe {self.nprobe})"
        elif self.ef_search is not None:
            what += f" (efSearch {self.ef_search})"
        target = ""
        if self.target_recall is not None and self.kind != "flat":
            target = (f", smallest {'nprobe' if self.nlist else 'efSearch'} reaching {self.target_recall:g}"
                      if self.target_reached else f", target {self.target_recall:g} NOT reached (best recall kept)")
        rerank = f" (re-ranking {self.rerank} x {self.k} candidates)" if self.rerank else ""
        return (f"{what} built in {self.build_seconds:.2f} s, recall@{self.k} against exact search "
                f"{self.recall:.3f}{rerank} on {len(self.query_rows)} queries{target}: {self.output}")


def _merge_topk(ids_a: np.ndarray, s_a: np.ndarray, ids_b: np.ndarray, s_b: np.ndarray, k: int,
                metric: str) -> tuple[np.ndarray, np.ndarray]:
    return best_k(np.concatenate([ids_a, ids_b], axis=1), np.concatenate([s_a, s_b], axis=1), k, metric)


def exact_search(source: ShardSet, queries: np.ndarray, k: int, metric: str,
                 block_rows: int = 65_536) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` ``(indices, scores)`` of prepared ``queries`` over every row of ``source``,
    streaming one block at a time (ties: lower global index first)."""
    q = np.ascontiguousarray(queries, dtype=np.float32)
    ids = np.full((len(q), k), -1, dtype=np.int64)
    scores = np.zeros((len(q), k), dtype=np.float32)
    for block in source.blocks(block_rows):
        x = prepare_vectors(block.embeddings, metric, source=block.source, first_row=block.first_row)
        flat = new_faiss_index("flat", x.shape[1], metric)
        flat.add(x)
        s, i = flat.search(q, min(k, len(x)))
        i = np.where(i >= 0, i + block.start, -1)
        ids, scores = _merge_topk(ids, scores, i, s, k, metric)
    return ids, scores


def _recall_at(index: SearchIndex, value: int | None, queries: np.ndarray, truth: np.ndarray) -> float:
    """recall@k of ``index`` (re-ranked when ``index.rerank``) on prepared ``queries`` against the
    exact ``truth (Q, k)``, at ``nprobe`` / ``efSearch`` = ``value`` (None: as set; flat)."""
    set_search_params(index.index, index.kind, nprobe=value, ef_search=value)
    found, _ = index.search_prepared(queries, truth.shape[1])
    return recall_of(found, truth)


def tune_search_param(index: SearchIndex, queries: np.ndarray, truth: np.ndarray, target: float,
                      upper: int) -> tuple[int, float, bool, dict[int, float]]:
    """Smallest value in ``1..upper`` of ``nprobe`` / ``efSearch`` whose recall reaches ``target``
    (doubling, then bisection): ``(value, recall, reached, every recall measured)``. When ``upper``
    misses the target: the smallest measured value with the best recall, and ``reached=False``.
    The recall is that of ``index.search_prepared``: re-ranked when ``index.rerank`` is set."""
    seen: dict[int, float] = {}

    def recall(value: int) -> float:
        if value not in seen:
            seen[value] = _recall_at(index, value, queries, truth)
        return seen[value]

    high = 1
    while recall(high) < target:
        if high >= upper:
            best = max(seen.values())
            value = min(v for v, r in seen.items() if r >= best)
            return value, best, False, seen
        high = min(upper, high * 2)
    low = high // 2  # recall(low) < target, or low == 0
    while high - low > 1:
        mid = (low + high) // 2
        if recall(mid) >= target:
            high = mid
        else:
            low = mid
    return high, seen[high], True, seen


def _npy_writer(path: Path, dtype: np.dtype, count: int) -> tuple[np.memmap, str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    return np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(count,)), tmp


def build_index_from_source(
    source: str | Path | ShardSet,
    output: str | Path,
    kind: str = "auto",
    metric: str = "cosine",
    nlist: int | None = None,
    pq_m: int | None = None,
    pq_bits: int = 8,
    hnsw_m: int = 32,
    ef_construction: int = 80,
    nprobe: int | None = None,
    ef_search: int | None = None,
    target_recall: float | None = None,
    n_queries: int = 1000,
    k: int = 10,
    seed: int = 0,
    points_per_list: int = 64,
    block_rows: int = 65_536,
    rerank: int = 0,
) -> IndexReport:
    """Build, measure, tune and save an index over ``source`` (see the module docstring);
    ``rerank`` R > 0 measures and tunes the search that re-ranks ``R k`` candidates exactly, and
    records R in the sidecar as the default of later searches."""
    if kind not in INDEX_KINDS:
        raise ConfigError(f"unknown index kind '{kind}'; use one of {', '.join(INDEX_KINDS)}")
    if metric not in ("cosine", "euclidean"):
        raise ConfigError(f"unknown metric '{metric}'; use 'cosine' or 'euclidean'")
    if target_recall is not None and not 0.0 < target_recall <= 1.0:
        raise ConfigError(f"--target-recall must lie in (0, 1], got {target_recall}")
    rerank = rerank_factor(rerank)
    data = source if isinstance(source, ShardSet) else open_embeddings(source)
    output = Path(output)
    n, dim = len(data), data.dim
    if rerank:  # a source re-ranking cannot read fails now, not after the build
        open_stored_rows(data, metric, n, dim)
    kind = choose_kind(n, dim) if kind == "auto" else kind
    lists = None
    if kind in ("ivf", "ivfpq"):
        lists = nlist or default_nlist(n)
        if lists > n:
            raise ConfigError(f"--nlist {lists} exceeds the {n} items; lower --nlist")
    index = new_faiss_index(kind, dim, metric, lists, pq_m, pq_bits, hnsw_m, ef_construction)
    rng = np.random.default_rng(seed)

    start = time.perf_counter()
    sample_n = 0
    if lists is not None:
        sample_n = train_sample_size(n, lists, kind, points_per_list)
        check_pq_sample(kind, sample_n, pq_bits)
        rows = np.sort(rng.choice(n, size=sample_n, replace=False))
        index.train(_gather(data, rows, metric))
    train_seconds = time.perf_counter() - start

    start = time.perf_counter()
    columns = {name: _npy_writer(output.with_name(f"{output.name}.{name}.npy"), data.column_dtype(name), n)
               for name in ("labels", "paths")}
    try:
        for block in data.blocks(block_rows):
            index.add(prepare_vectors(block.embeddings, metric, source=block.source, first_row=block.first_row))
            stop = block.start + len(block.embeddings)
            for name, values in (("labels", block.labels), ("paths", block.paths)):
                columns[name][0][block.start:stop] = values
        for name, (arr, tmp) in columns.items():
            arr.flush()
            del arr
        add_seconds = time.perf_counter() - start
        from deepmetric.search_index import write_faiss_atomically

        write_faiss_atomically(index, output)
        for name, (_, tmp) in columns.items():
            os.chmod(tmp, 0o644)
            os.replace(tmp, output.with_name(f"{output.name}.{name}.npy"))
    finally:
        for _, tmp in columns.values():
            Path(tmp).unlink(missing_ok=True)

    start = time.perf_counter()
    saved = SearchIndex(index, kind, metric, build_seconds=train_seconds + add_seconds, source=data, rerank=rerank)
    k = min(k, n)
    query_rows = np.sort(np.random.default_rng(seed + 1).choice(n, size=min(n_queries, n), replace=False))
    queries = _gather(data, query_rows, metric)
    truth, _ = exact_search(data, queries, k, metric, block_rows)
    reached: bool | None = None
    by_value: dict[int, float] = {}
    if kind in ("ivf", "ivfpq", "hnsw"):
        upper = lists if lists is not None else MAX_EF_SEARCH
        fixed = nprobe if kind != "hnsw" else ef_search
        if fixed is None and target_recall is not None:
            value, recall, reached, by_value = tune_search_param(saved, queries, truth, target_recall, upper)
        else:
            value = min(fixed or (16 if kind != "hnsw" else 128), upper)
            recall = _recall_at(saved, value, queries, truth)
            if target_recall is not None:
                reached = recall >= target_recall
        set_search_params(index, kind, nprobe=value, ef_search=value)
    else:
        recall = _recall_at(saved, None, queries, truth)
    measure_seconds = time.perf_counter() - start

    sidecar = saved.write_sidecar(output, labels_file=f"{output.name}.labels.npy", paths_file=f"{output.name}.paths.npy",
                                  recall_at_10=recall, recall_queries=len(query_rows), target_recall=target_recall,
                                  train_sample=sample_n, seed=seed, source=str(data.location.resolve()))
    return IndexReport(output, kind, metric, n, dim, lists, sidecar.nprobe, sidecar.ef_search, recall, k,
                       query_rows, sample_n, target_recall, reached, by_value, train_seconds, add_seconds,
                       measure_seconds, rerank)


def _gather(data: ShardSet, rows: np.ndarray, metric: str) -> np.ndarray:
    """Prepared vectors of the global ``rows``; a bad row is named by its shard file and row."""
    raw = data.take(rows)
    finite = np.isfinite(raw).all(axis=1) if raw.dtype.kind == "f" else np.ones(len(raw), bool)
    if not finite.all():
        bad = int(rows[np.flatnonzero(~finite)[0]])
        shard = next(s for s in data.shards if s.start <= bad < s.stop)
        prepare_vectors(raw[~finite][:1], metric, source=shard.path.name, first_row=bad - shard.start)
    return prepare_vectors(raw, metric)


def search_shards(data: ShardSet, queries: np.ndarray, k: int = 5, metric: str = "cosine",
                  block_rows: int = 65_536) -> list[list[Any]]:
    """Exact :class:`~deepmetric.inference.SearchHit` lists of ``queries`` over a shard folder
    (streaming, see :func:`exact_search`); scores as in :mod:`deepmetric.search_index`."""
    from deepmetric.errors import DataError
    from deepmetric.inference import SearchHit

    q = prepare_vectors(np.asarray(queries), metric, source="queries")
    if q.shape[1] != data.dim:
        raise DataError(f"query embeddings have {q.shape[1]} dims but the gallery has {data.dim}; embed the queries "
                        "with the model that embedded the gallery")
    ids, scores = exact_search(data, q, min(k, len(data)), metric, block_rows)
    flat = ids.reshape(-1)
    labels = data.take_column("labels", flat)
    paths = data.take_column("paths", flat)
    width = ids.shape[1]
    return [[SearchHit(r + 1, str(paths[qi * width + r]), str(labels[qi * width + r]), float(scores[qi, r]))
             for r in range(width) if ids[qi, r] >= 0] for qi in range(len(ids))]


def bytes_per_vector(kind: str, dim: int, pq_m: int = 16, hnsw_m: int = 32, dtype_bytes: int = 4) -> float:
    """Memory of one indexed vector (faiss layouts; the fixed parts are :func:`fixed_bytes`):

    * flat: ``dtype_bytes x dim`` (4 for float32, 2 for float16);
    * ivf (IVF-Flat): ``4 dim + 8`` (the vector and its int64 id in an inverted list);
    * ivfpq: ``pq_m + 8`` (an 8-bit code per sub-quantizer and the id);
    * hnsw (HNSW-Flat): ``4 dim + 8 M + 4 M / (M - 1) + 12``: the vector, ``2 M`` int32 links on
      level 0, on average ``1 / (M - 1)`` upper levels of ``M`` links, an 8-byte offset and a
      4-byte level.
    """
    if kind == "flat":
        return float(dtype_bytes * dim)
    if kind == "ivf":
        return 4.0 * dim + 8
    if kind == "ivfpq":
        return float(pq_m + 8)
    if kind == "hnsw":
        return 4.0 * dim + 8 * hnsw_m + 4 * hnsw_m / (hnsw_m - 1) + 12
    raise ConfigError(f"unknown index kind '{kind}'; use one of flat, ivf, ivfpq, hnsw")


def fixed_bytes(kind: str, dim: int, nlist: int = 0, pq_bits: int = 8) -> float:
    """Memory independent of the number of vectors: ``4 nlist dim`` for the IVF centroids, plus
    ``4 x 2^bits x dim`` for IVF-PQ's codebooks (0 for flat and HNSW)."""
    if kind in ("ivf", "ivfpq"):
        return 4.0 * nlist * dim + (4.0 * 2**pq_bits * dim if kind == "ivfpq" else 0.0)
    return 0.0
