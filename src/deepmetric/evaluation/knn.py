"""k-nearest-neighbour search: exact (chunked torch) or approximate (faiss), one interface.

The exact backend never builds the full Q x G matrix. On the CPU in float32 (galleries of
``BLOCKED_MIN_GALLERY`` items or more, ``k <= 256``) it works in 2048 x 2048 score blocks with
threshold pruning, and a leave-one-out search uses the symmetry of the scores to compute each
block once (:mod:`deepmetric.evaluation.blocked_knn`): memory is one block plus the Q x k result.
Otherwise (GPU, float64, small galleries, large k) it streams chunks of queries against the whole
gallery, so peak memory is bounded by ``chunk_size x G`` scores plus the Q x k result. Both paths
return the same neighbours under the tie rule below.

Ordering and ties (exact backend, documented and tested):
    neighbours are sorted best first (highest cosine similarity, or smallest Euclidean
    distance); among EQUAL scores the LOWER gallery index comes first, including at the k-th
    boundary (which of several tied items makes it into the top k). ``torch.topk`` alone gives
    no such guarantee, so rows whose k-th score is tied with an unselected item are re-selected
    explicitly (see :func:`_topk_lowest_index_ties`).

Leave-one-out: with ``gallery=None`` (or ``exclude_self=True`` when the gallery is the query
set) query ``i`` never matches gallery item ``i``. Exclusion is by INDEX, not by value: an exact
duplicate of the query elsewhere in the gallery is still a (distance 0) neighbour.
``query_ids`` generalises this: ``query_ids[i]`` is the gallery position of query ``i``'s own
item (``-1`` for none).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from deepmetric.errors import ConfigError, InputError, unknown_name_message
from deepmetric.evaluation import blocked_knn
from deepmetric.evaluation.blocked_knn import blocked_exact_search
from deepmetric.functional import check_embeddings

KNN_METRICS = ("cosine", "euclidean")
KNN_BACKENDS = ("exact", "faiss")
FAISS_INDEXES = ("flat", "ivf", "hnsw")

#: Default memory budget of one chunk's score matrix, in elements (2**25 float32 = 128 MiB).
DEFAULT_CHUNK_ELEMENTS = 2**25
#: Galleries at least this large use the blocked, pruned CPU search (:mod:`.blocked_knn`);
#: smaller ones take the plain path (one chunk, nothing to prune).
BLOCKED_MIN_GALLERY = 2048


class KnnResult(NamedTuple):
    """Neighbours of every query, best first.

    ``indices``: Q x k gallery positions (int64). ``scores``: Q x k cosine similarities
    (descending) for ``metric="cosine"`` or Euclidean distances (ascending) for
    ``metric="euclidean"``. Both are torch tensors on the queries' device when the queries were
    a tensor, numpy arrays when they were an array.
    """

    indices: Any
    scores: Any


def _as_tensor(x: Any, name: str) -> Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, Tensor):
        raise InputError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")
    return x


def _compute_dtype(x: Tensor) -> torch.dtype:
    # half precision is slow or unsupported for matmul on CPU and loses ranking precision
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _resolve_exclusion(
    n_queries: int,
    n_gallery: int,
    gallery_is_queries: bool,
    exclude_self: bool | None,
    query_ids: Any,
    device: torch.device,
) -> Tensor | None:
    """Gallery index to exclude for every query (``-1``: none), or ``None`` for no exclusion."""
    if query_ids is not None:
        if exclude_self:
            raise InputError("pass either exclude_self=True or query_ids, not both")
        ids = _as_tensor(query_ids, "query_ids")
        if ids.dim() != 1 or ids.numel() != n_queries or ids.is_floating_point():
            raise InputError(
                f"query_ids must be a 1-D integer array with one entry per query ({n_queries}), "
                f"got shape {tuple(ids.shape)} and dtype {ids.dtype}"
            )
        ids = ids.to(device=device, dtype=torch.long)
        if n_queries and (int(ids.max()) >= n_gallery or int(ids.min()) < -1):
            raise InputError(
                f"query_ids must lie in [-1, {n_gallery - 1}] (gallery position of the query's own "
                "item, -1 for none)"
            )
        return ids
    if exclude_self is None:
        exclude_self = gallery_is_queries
    if not exclude_self:
        return None
    if n_queries != n_gallery:
        raise InputError(
            f"exclude_self=True needs the gallery to be the query set, but there are {n_queries} "
            f"queries and {n_gallery} gallery items; pass query_ids (gallery position of each query, "
            "-1 for none) instead"
        )
    return torch.arange(n_queries, device=device)


def _topk_lowest_index_ties(key: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top-k of every row of ``key`` (larger is better), sorted by (key desc, column asc).

    ``torch.topk`` may pick any of several items tied at the k-th value. Taking k + 1 values
    shows where that choice matters: rows whose (k+1)-th value equals their k-th. Those rows are
    re-selected explicitly: every item strictly above the k-th value plus the lowest-column
    items tied with it, found with a cumulative count over the tie mask.
    """
    n_cols = key.shape[1]
    vals, idx = torch.topk(key, min(k + 1, n_cols), dim=1, largest=True, sorted=True)
    if vals.shape[1] > k:
        kth = vals[:, k - 1]
        ambiguous = torch.nonzero(vals[:, k] == kth).flatten()
    else:
        kth = vals[:, -1]
        ambiguous = kth.new_empty(0, dtype=torch.long)
    vals, idx = vals[:, :k].contiguous(), idx[:, :k].contiguous()
    if ambiguous.numel():
        # sub-batches keep the int32 cumulative count within the chunk's memory budget
        step = max(1, key.shape[0] // 4)
        for start in range(0, ambiguous.numel(), step):
            rows = ambiguous[start : start + step]
            sub = key.index_select(0, rows)
            thr = kth.index_select(0, rows).unsqueeze(1)
            greater = sub > thr
            need = k - greater.sum(dim=1, keepdim=True)
            tied = sub == thr
            chosen = greater | (tied & (tied.cumsum(dim=1, dtype=torch.int32) <= need))
            cols = torch.nonzero(chosen)[:, 1].view(-1, k)  # row-major: ascending columns per row
            idx[rows] = cols
            vals[rows] = sub.gather(1, cols)
    # final order: ascending column, then a stable sort by descending key keeps ties index-ordered
    order = idx.argsort(dim=1)
    idx, vals = idx.gather(1, order), vals.gather(1, order)
    order = vals.argsort(dim=1, descending=True, stable=True)
    return vals.gather(1, order), idx.gather(1, order)


def _exact_search(
    queries: Tensor,
    gallery: Tensor,
    k: int,
    metric: str,
    exclude: Tensor | None,
    chunk_size: int,
    symmetric: bool = False,
) -> tuple[Tensor, Tensor]:
    """Exact search: blocked and pruned on the CPU in float32, plain chunks + topk otherwise.

    ``symmetric``: the gallery IS the query set and ``exclude`` is None or the identity, so
    the blocked path may use score symmetry.
    """
    if _use_blocked(gallery, k):
        return blocked_exact_search(queries, gallery, k, metric, exclude, symmetric)
    return _chunked_exact_search(queries, gallery, k, metric, exclude, chunk_size)


def _use_blocked(gallery: Tensor, k: int) -> bool:
    return (
        gallery.device.type == "cpu"
        and gallery.dtype != torch.float64
        and gallery.shape[0] >= BLOCKED_MIN_GALLERY
        # larger k: most of a block's scores are candidates, pruning cannot pay
        and k <= blocked_knn.DEFAULT_BLOCK // 8
    )


def _chunked_exact_search(
    queries: Tensor,
    gallery: Tensor,
    k: int,
    metric: str,
    exclude: Tensor | None,
    chunk_size: int,
) -> tuple[Tensor, Tensor]:
    dtype = _compute_dtype(gallery)
    device = gallery.device
    g = gallery.to(dtype)
    if metric == "cosine":
        g = F.normalize(g, p=2, dim=1)
        g_bias = None
    else:
        g_bias = -(g * g).sum(dim=1)  # ranking key: 2 q.g - |g|^2 = |q|^2 - |q - g|^2
    gt = g.T
    out_idx = torch.empty(queries.shape[0], k, dtype=torch.long, device=device)
    out_val = torch.empty(queries.shape[0], k, dtype=dtype, device=device)
    for start in range(0, queries.shape[0], chunk_size):
        q = queries[start : start + chunk_size].to(device=device, dtype=dtype)
        if metric == "cosine":
            key = F.normalize(q, p=2, dim=1) @ gt
        else:
            key = torch.addmm(g_bias, q, gt, beta=1.0, alpha=2.0)
        if exclude is not None:
            own = exclude[start : start + chunk_size].to(device)
            rows = torch.nonzero(own >= 0).flatten()
            key[rows, own[rows]] = float("-inf")
        vals, idx = _topk_lowest_index_ties(key, k)
        del key
        if metric == "euclidean":
            q_sq = (q * q).sum(dim=1, keepdim=True)
            vals = (q_sq - vals).clamp_min(0.0).sqrt()
        out_idx[start : start + chunk_size] = idx
        out_val[start : start + chunk_size] = vals
    return out_idx, out_val


def _import_faiss() -> Any:
    try:
        import faiss  # noqa: PLC0415  (optional dependency, imported lazily)
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ConfigError(
            'backend="faiss" needs the faiss package, which is not installed; '
            'run: pip install "deepmetric[faiss]"  (or use backend="exact")'
        ) from err
    return faiss


def _faiss_search(
    queries: Tensor,
    gallery: Tensor,
    k: int,
    metric: str,
    exclude: Tensor | None,
    faiss_index: str,
    nlist: int | None,
    nprobe: int,
    hnsw_m: int,
    ef_search: int,
) -> tuple[Tensor, Tensor]:
    faiss = _import_faiss()
    q = np.ascontiguousarray(queries.detach().to("cpu", torch.float32).numpy())
    g = np.ascontiguousarray(gallery.detach().to("cpu", torch.float32).numpy())
    if metric == "cosine":
        q, g = q.copy(), g.copy()
        faiss.normalize_L2(q)
        faiss.normalize_L2(g)
        fmetric = faiss.METRIC_INNER_PRODUCT
    else:
        fmetric = faiss.METRIC_L2
    dim = g.shape[1]
    if faiss_index == "flat":
        index = faiss.IndexFlat(dim, fmetric)
    elif faiss_index == "ivf":
        n_lists = nlist if nlist is not None else max(1, min(4096, int(4 * np.sqrt(g.shape[0]))))
        if n_lists > g.shape[0]:
            raise InputError(
                f"faiss IVF needs nlist <= gallery size ({g.shape[0]}), got {n_lists}; lower nlist"
            )
        quantizer = faiss.IndexFlat(dim, fmetric)
        index = faiss.IndexIVFFlat(quantizer, dim, n_lists, fmetric)
        index.train(g)
        index.nprobe = min(nprobe, n_lists)
    else:
        index = faiss.IndexHNSWFlat(dim, hnsw_m, fmetric)
        index.hnsw.efSearch = max(ef_search, k + 1)
    index.add(g)
    extra = 0 if exclude is None else 1
    dist, ids = index.search(q, k + extra)
    dist_t = torch.from_numpy(dist).to(torch.float64 if gallery.dtype == torch.float64 else torch.float32)
    ids_t = torch.from_numpy(ids).long()
    if exclude is not None:
        own = exclude.cpu().unsqueeze(1)
        drop = (ids_t == own) & (own >= 0)
        none_dropped = ~drop.any(dim=1)
        drop[none_dropped, -1] = True  # own item not retrieved: drop the surplus last one
        keep = ~drop
        ids_t = ids_t[keep].view(-1, k)
        dist_t = dist_t[keep].view(-1, k)
    if metric == "euclidean":
        dist_t = dist_t.clamp_min(0.0).sqrt()
        key = -dist_t
    else:
        key = dist_t
    # same ordering convention as the exact path within the returned list
    order = ids_t.argsort(dim=1)
    ids_t, key, dist_t = ids_t.gather(1, order), key.gather(1, order), dist_t.gather(1, order)
    order = key.argsort(dim=1, descending=True, stable=True)
    if (ids_t < 0).any():
        raise InputError(
            f"faiss {faiss_index} index returned fewer than k={k} neighbours for some queries; "
            "raise nprobe / ef_search or use faiss_index='flat'"
        )
    return ids_t.gather(1, order), dist_t.gather(1, order)


def default_chunk_size(n_gallery: int, budget_elements: int = DEFAULT_CHUNK_ELEMENTS) -> int:
    """Queries per chunk so that one chunk's score matrix holds about ``budget_elements`` values."""
    return max(1, budget_elements // max(1, n_gallery))


def knn_search(
    queries: Tensor | np.ndarray,
    gallery: Tensor | np.ndarray | None = None,
    k: int = 1,
    *,
    metric: str = "cosine",
    exclude_self: bool | None = None,
    query_ids: Tensor | np.ndarray | None = None,
    chunk_size: int | None = None,
    backend: str = "exact",
    faiss_index: str = "flat",
    nlist: int | None = None,
    nprobe: int = 16,
    hnsw_m: int = 32,
    ef_search: int = 128,
) -> KnnResult:
    """The ``k`` nearest gallery items of every query, best first.

    Args:
        queries: Q x D embeddings (torch tensor on any device, or numpy array).
        gallery: G x D embeddings; ``None`` searches the queries against themselves
            (leave-one-out, see ``exclude_self``).
        k: neighbours per query; at most the number of gallery items a query may match.
        metric: ``"cosine"`` (scores are similarities, descending) or ``"euclidean"`` (scores
            are distances, ascending).
        exclude_self: drop gallery item ``i`` from query ``i``'s candidates. Defaults to True
            when ``gallery`` is None, else False; True needs Q == G.
        query_ids: alternative to ``exclude_self``: ``query_ids[i]`` is the gallery position
            of query ``i``'s own item, excluded from its neighbours (``-1``: exclude nothing).
        chunk_size: queries per chunk of the plain exact path (memory ~ chunk_size x G scores);
            default :func:`default_chunk_size` (about 128 MiB of float32 scores). The blocked
            CPU path uses fixed 2048 x 2048 blocks instead.
        backend: ``"exact"`` (torch, any device, deterministic ties) or ``"faiss"``
            (CPU; ``pip install "deepmetric[faiss]"``).
        faiss_index: ``"flat"`` (exact), ``"ivf"`` (IVF-Flat, ``nlist`` lists, ``nprobe``
            probed) or ``"hnsw"`` (``hnsw_m`` links, ``ef_search``).

    Returns:
        :class:`KnnResult` ``(indices, scores)``, each Q x k. Ties: equal scores are ordered by
        ascending gallery index, and the k-th place goes to the lowest tied index (exact
        backend; the faiss backend orders ties inside its returned list the same way but
        faiss itself decides which tied items reach the k-th place).
    """
    if metric not in KNN_METRICS:
        raise ConfigError(unknown_name_message("metric", metric, KNN_METRICS))
    if backend not in KNN_BACKENDS:
        raise ConfigError(unknown_name_message("k-NN backend", backend, KNN_BACKENDS))
    if backend == "faiss" and faiss_index not in FAISS_INDEXES:
        raise ConfigError(unknown_name_message("faiss index", faiss_index, FAISS_INDEXES))
    as_numpy = isinstance(queries, np.ndarray)
    q = _as_tensor(queries, "queries")
    check_embeddings(q, name="queries")
    gallery_is_queries = gallery is None
    g = q if gallery is None else _as_tensor(gallery, "gallery")
    if not gallery_is_queries:
        check_embeddings(g, name="gallery")
    if q.shape[1] != g.shape[1]:
        raise InputError(
            f"queries have {q.shape[1]} dims but the gallery has {g.shape[1]}; embed both with "
            "the same model"
        )
    if g.shape[0] == 0:
        raise InputError("the gallery is empty; pass at least one gallery embedding")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InputError(f"k must be a positive integer, got {k!r}")
    k = int(k)
    exclude = _resolve_exclusion(
        q.shape[0], g.shape[0], gallery_is_queries, exclude_self, query_ids, g.device
    )
    available = g.shape[0] - (0 if exclude is None else 1)
    if k > available:
        raise InputError(
            f"k={k} is larger than the {available} gallery items a query can match"
            f"{' (its own item excluded)' if exclude is not None else ''}; lower k"
        )
    if chunk_size is None:
        chunk_size = default_chunk_size(g.shape[0])
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise InputError(f"chunk_size must be a positive integer, got {chunk_size!r}")

    if q.shape[0] == 0:
        dtype = _compute_dtype(g)
        idx = torch.empty(0, k, dtype=torch.long, device=q.device)
        val = torch.empty(0, k, dtype=dtype, device=q.device)
    elif backend == "exact":
        with torch.no_grad():
            symmetric = gallery_is_queries and query_ids is None
            idx, val = _exact_search(
                q.detach(), g.detach(), k, metric, exclude, int(chunk_size), symmetric
            )
    else:
        idx, val = _faiss_search(
            q, g, k, metric, exclude, faiss_index, nlist, nprobe, hnsw_m, ef_search
        )
    if as_numpy:
        return KnnResult(idx.cpu().numpy(), val.cpu().numpy())
    return KnnResult(idx.to(q.device), val.to(q.device))
