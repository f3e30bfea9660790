"""Retrieval and classification metrics of embeddings, all from ONE k-NN pass.

Definitions (see METHODS.md "Shared pieces"; the query's own item is never its own neighbour):

* Recall@K: fraction of queries with at least one same-class item among their K nearest
  gallery items (DML papers, e.g. Song et al. CVPR 2016).
* Precision@1: fraction of queries whose nearest gallery item has the query's class.
* R-precision and MAP@R (Musgrave, Belongie & Lim, "A Metric Learning Reality Check", ECCV
  2020): R = number of OTHER gallery items of the query's class; R-precision = (same-class items
  among the R nearest) / R; MAP@R = (1/R) sum_{i<=R} P(i) rel(i), with P(i) the precision among
  the i nearest and rel(i) = 1 when the i-th neighbour has the query's class.
* Queries with R = 0 (their class has no other gallery item) cannot retrieve anything: they are
  left out of ALL four retrieval metrics (so Recall@1 == Precision@1) and counted in
  ``"n_queries_excluded"``.
* k-NN accuracy: majority vote of the ``knn_k`` nearest gallery labels; a tie between classes
  goes to the tied class whose first (nearest) occurrence ranks best. All queries count.
* Nearest-centroid accuracy: the predicted class is the gallery class mean (of L2-normalised
  embeddings, compared by cosine, for ``metric="cosine"``; of raw embeddings by Euclidean
  distance otherwise) closest to the query; the query's own item is removed from its class mean
  (leave-one-out), a class with no item left has no centroid, and ties go to the smallest label.
  All queries count.
* NMI and F1: k-means clustering, see :mod:`deepmetric.evaluation.clustering`.

Extra metrics (never computed by default; request them by name in ``metrics``; each family
gives one key per K in ``k_values``; queries with R = 0 are left out as above):

* ``precision@k`` -> ``"precision@K"``: (same-class items among the K nearest) / K, the usual
  information-retrieval definition (penalises a perfect ranking when R < K). At K = 1 it equals
  ``"precision@1"`` above (same key, same value).
* ``precision_oml@k`` -> ``"precision_oml@K"``: (same-class items among the K nearest) /
  min(K, R), open-metric-learning's ``precision@k`` (a perfect ranking scores 1 for every K).
* ``map@k`` -> ``"map@K"``: open-metric-learning's ``map@k``,
  (1 / min(K, R)) sum_{i<=K} P(i) rel(i); with K >= R it is MAP@R's sum over the first K.
* ``mrr`` -> ``"mrr"``: mean over queries of 1 / (rank of the first same-class item) over the
  WHOLE gallery (not only the k-NN list; an extra exact pass in chunks, ranks with the tie rule
  below).
* ``ami`` -> ``"ami"``: adjusted mutual information (arithmetic normalisation, as
  :func:`sklearn.metrics.adjusted_mutual_info_score`) of the same k-means clustering as NMI/F1
  (computed once when several of them are requested; the NMI and F1 values do not change).

:func:`per_class_metrics` breaks Recall@1 and MAP@R down by query class.

Neighbour order and ties follow :func:`deepmetric.evaluation.knn.knn_search` (lower gallery
index first among equal scores).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from deepmetric.errors import ConfigError, DataError, InputError, unknown_name_message
from deepmetric.evaluation.clustering import clustering_scores
from deepmetric.evaluation.knn import (
    KNN_METRICS,
    _resolve_exclusion,
    default_chunk_size,
    knn_search,
)
from deepmetric.functional import check_embeddings

RETRIEVAL_METRICS = ("recall@k", "precision@1", "r_precision", "map@r")
ALL_METRICS = RETRIEVAL_METRICS + ("nmi", "f1", "knn_accuracy", "centroid_accuracy")
DEFAULT_METRICS = ALL_METRICS
#: opt-in metrics (module docstring); not in ALL_METRICS / DEFAULT_METRICS, so the default
#: output keeps its keys
EXTRA_RETRIEVAL_METRICS = ("precision@k", "precision_oml@k", "map@k", "mrr")
EXTRA_METRICS = EXTRA_RETRIEVAL_METRICS + ("ami",)
KNOWN_METRICS = ALL_METRICS + EXTRA_METRICS


def relevant_counts(
    query_labels: Tensor, gallery_labels: Tensor, exclude: Tensor | None = None
) -> Tensor:
    """R for every query: gallery items sharing its label, minus its own excluded item.

    ``exclude[i]`` is the gallery position removed from query ``i``'s candidates (``-1``: none),
    as in :func:`~deepmetric.evaluation.knn.knn_search`.
    """
    uniq, counts = torch.unique(gallery_labels, return_counts=True)
    if uniq.numel() == 0:
        return torch.zeros_like(query_labels)
    pos = torch.searchsorted(uniq, query_labels).clamp_max(uniq.numel() - 1)
    r = torch.where(uniq[pos] == query_labels, counts[pos], torch.zeros_like(counts[pos]))
    if exclude is not None:
        has = exclude >= 0
        own_same = torch.zeros_like(has)
        own_same[has] = gallery_labels[exclude[has]] == query_labels[has]
        r = r - own_same.long()
    return r


def neighbour_hits(indices: Tensor, query_labels: Tensor, gallery_labels: Tensor) -> Tensor:
    """Boolean Q x k: does the j-th neighbour of query i share its label?"""
    return gallery_labels[indices] == query_labels.unsqueeze(1)


def recall_at_k(hits: Tensor, k_values: Sequence[int]) -> dict[str, float]:
    """``{"recall@K": fraction of rows with a hit among their first K columns}``."""
    if k_values and max(k_values) > hits.shape[1]:
        raise InputError(
            f"recall@{max(k_values)} needs at least {max(k_values)} neighbours per query, got "
            f"{hits.shape[1]}; search with a larger k"
        )
    has_hit = hits.any(dim=1)
    first_hit = hits.to(torch.uint8).argmax(dim=1)  # first True (argmax returns the first maximum)
    return {f"recall@{k}": float((has_hit & (first_hit < k)).double().mean()) for k in k_values}


def precision_at_1(hits: Tensor) -> float:
    """Fraction of rows whose first neighbour is a hit."""
    return float(hits[:, 0].double().mean())


def _within_r(hits: Tensor, n_relevant: Tensor) -> Tensor:
    if hits.shape[1] < int(n_relevant.max()):
        raise InputError(
            f"R-based metrics need at least max R = {int(n_relevant.max())} neighbours per query, "
            f"got {hits.shape[1]}; search with k = the largest class size"
        )
    cols = torch.arange(hits.shape[1], device=hits.device)
    return hits & (cols.unsqueeze(0) < n_relevant.unsqueeze(1))


def r_precision(hits: Tensor, n_relevant: Tensor) -> float:
    """Mean over rows of (hits among the first R columns) / R; every R must be > 0."""
    within = _within_r(hits, n_relevant)
    return float((within.sum(dim=1).double() / n_relevant.double()).mean())


def map_at_r(hits: Tensor, n_relevant: Tensor) -> float:
    """Mean over rows of (1/R) sum_{i<=R} precision@i * hit(i); every R must be > 0."""
    within = _within_r(hits, n_relevant).double()
    ranks = torch.arange(1, hits.shape[1] + 1, device=hits.device, dtype=torch.float64)
    precision_at_i = within.cumsum(dim=1) / ranks
    return float(((precision_at_i * within).sum(dim=1) / n_relevant.double()).mean())


def knn_vote(neighbour_labels: Tensor) -> Tensor:
    """Majority label of every row (Q x k, nearest first).

    Tie rule: among the labels with the most votes, the one whose first occurrence is nearest.
    """
    votes = (neighbour_labels.unsqueeze(2) == neighbour_labels.unsqueeze(1)).sum(dim=2)
    k = neighbour_labels.shape[1]
    rank = torch.arange(k, device=neighbour_labels.device)
    best = (votes * (k + 1) - rank.unsqueeze(0)).argmax(dim=1)
    return neighbour_labels.gather(1, best.unsqueeze(1)).squeeze(1)


def nearest_centroid_predictions(
    queries: Tensor,
    gallery: Tensor,
    gallery_labels: Tensor,
    *,
    metric: str = "cosine",
    exclude: Tensor | None = None,
    chunk_size: int | None = None,
) -> Tensor:
    """Label of the nearest gallery class mean for every query (leave-one-out, see module doc)."""
    dtype = torch.float64 if gallery.dtype == torch.float64 else torch.float32
    g = gallery.to(dtype)
    q_all = queries.to(device=g.device, dtype=dtype)
    if metric == "cosine":
        g = F.normalize(g, dim=1)
        q_all = F.normalize(q_all, dim=1)
    classes, cls_of = torch.unique(gallery_labels, return_inverse=True)
    n_classes = classes.numel()
    sums = torch.zeros(n_classes, g.shape[1], dtype=dtype, device=g.device).index_add_(0, cls_of, g)
    counts = torch.bincount(cls_of, minlength=n_classes).to(dtype)

    if metric == "cosine":
        centroids = F.normalize(sums, dim=1)
        bias = torch.zeros(n_classes, dtype=dtype, device=g.device)
    else:
        centroids = sums / counts.unsqueeze(1)
        bias = -(centroids * centroids).sum(dim=1)
    scale = 1.0 if metric == "cosine" else 2.0  # key 2 q.mu - |mu|^2 = |q|^2 - |q - mu|^2

    def own_key(q: Tensor, left_sum: Tensor, left_count: Tensor) -> Tensor:
        if metric == "cosine":
            return (q * F.normalize(left_sum, dim=1)).sum(dim=1)
        mu = left_sum / left_count.clamp_min(1).unsqueeze(1)
        return 2 * (q * mu).sum(dim=1) - (mu * mu).sum(dim=1)

    step = chunk_size or default_chunk_size(n_classes)
    preds = torch.empty(q_all.shape[0], dtype=torch.long, device=g.device)
    for start in range(0, q_all.shape[0], step):
        q = q_all[start : start + step]
        key = torch.addmm(bias, q, centroids.T, beta=1.0, alpha=scale)
        if exclude is not None:
            own = exclude[start : start + step].to(g.device)
            rows = torch.nonzero(own >= 0).flatten()
            if rows.numel():
                own_items = own[rows]
                own_cls = cls_of[own_items]
                left_sum = sums[own_cls] - g[own_items]
                left_count = counts[own_cls] - 1
                fixed = own_key(q[rows], left_sum, left_count)
                fixed = torch.where(left_count > 0, fixed, torch.full_like(fixed, float("-inf")))
                key[rows, own_cls] = fixed
        preds[start : start + step] = key.argmax(dim=1)  # first maximum: smallest label on ties
    return classes[preds]


def as_tensor(x: Any, name: str) -> Tensor:
    """``x`` (a tensor, numpy array, list or tuple) as a tensor; anything else is an InputError naming it."""
    if isinstance(x, (list, tuple)):
        x = torch.as_tensor(x)
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, Tensor):
        raise InputError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")
    return x


_as_tensor = as_tensor


def _checked(embeddings: Any, labels: Any, name: str) -> tuple[Tensor, Tensor]:
    x = _as_tensor(embeddings, name)
    y = _as_tensor(labels, f"{name} labels")
    check_embeddings(x, y, name=name)
    if x.shape[0] == 0:
        raise DataError(f"{name} are empty (0 rows); evaluate on a non-empty split")
    return x, y.to(x.device).long()


def evaluate_embeddings(
    embeddings: Tensor | np.ndarray,
    labels: Tensor | np.ndarray,
    query_embeddings: Tensor | np.ndarray | None = None,
    query_labels: Tensor | np.ndarray | None = None,
    *,
    metrics: Sequence[str] = DEFAULT_METRICS,
    k_values: Sequence[int] = (1, 2, 4, 8),
    metric: str = "cosine",
    backend: str = "exact",
    chunk_size: int | None = None,
    knn_k: int = 5,
    faiss_index: str = "flat",
    kmeans_backend: str = "sklearn",
    seed: int = 0,
) -> dict[str, float]:
    """Several metrics of embeddings from ONE k-NN pass (see the module docstring).

    Modes:
        * leave-one-out (``query_embeddings=None``): every embedding is a query against all
          the others (never itself, by index: exact duplicates still count as neighbours).
        * query/gallery: ``query_embeddings`` are searched against ``embeddings`` (the gallery
          and the centroid/training set), nothing excluded.

    The k-NN pass uses k = max(max ``k_values``, largest R, ``knn_k``), as needed by the
    requested ``metrics``. Clustering (NMI, F1) runs on the query set (the whole set in
    leave-one-out mode) with ``kmeans_backend``: ``"sklearn"`` (k-means++, the usual choice;
    slow for thousands of classes: ~3 min for 10,000 x 128 with 1,000 classes on 2 cores) or
    ``"faiss"`` (~25x faster, random initialisation, typically a few points lower NMI), seeded by
    ``seed``. Compare clustering scores only between runs of the same backend.

    Returns:
        dict with the requested keys among ``"recall@K"`` (one per K in ``k_values``),
        ``"precision@1"``, ``"r_precision"``, ``"map@r"``, ``"nmi"``, ``"f1"``,
        ``"knn_accuracy"``, ``"centroid_accuracy"``, plus ``"n_queries"`` and, when a
        retrieval metric is requested, ``"n_queries_excluded"`` (queries with R = 0).
    """
    if isinstance(metrics, str):
        metrics = (metrics,)
    for name in metrics:
        if name not in KNOWN_METRICS:
            raise ConfigError(unknown_name_message("evaluation metric", name, KNOWN_METRICS))
    if metric not in KNN_METRICS:
        raise ConfigError(unknown_name_message("metric", metric, KNN_METRICS))
    k_values = tuple(int(k) for k in k_values)
    k_families = ("recall@k", "precision@k", "precision_oml@k", "map@k")
    if any(m in metrics for m in k_families) and (not k_values or min(k_values) < 1):
        raise ConfigError(f"k_values must be positive integers, got {k_values}")
    if isinstance(knn_k, bool) or not isinstance(knn_k, int) or knn_k < 1:
        raise ConfigError(f"knn_k must be a positive integer, got {knn_k!r}")

    gallery, gallery_labels = _checked(embeddings, labels, "embeddings")
    leave_one_out = query_embeddings is None
    if leave_one_out:
        if query_labels is not None:
            raise InputError("query_labels given without query_embeddings; pass both or neither")
        queries, q_labels = gallery, gallery_labels
    else:
        if query_labels is None:
            raise InputError("query_embeddings given without query_labels; pass both or neither")
        queries, q_labels = _checked(query_embeddings, query_labels, "query_embeddings")
        queries, q_labels = queries.to(gallery.device), q_labels.to(gallery.device)
        if queries.shape[1] != gallery.shape[1]:
            raise InputError(
                f"query_embeddings have {queries.shape[1]} dims but embeddings have "
                f"{gallery.shape[1]}; embed both with the same model"
            )
    exclude = _resolve_exclusion(
        queries.shape[0], gallery.shape[0], leave_one_out, None, None, gallery.device
    )
    available = gallery.shape[0] - (1 if leave_one_out else 0)

    results: dict[str, float] = {"n_queries": queries.shape[0]}
    wants_retrieval = any(m in metrics for m in RETRIEVAL_METRICS + EXTRA_RETRIEVAL_METRICS)
    k_needed = 0
    n_relevant = valid = None
    if wants_retrieval:
        n_relevant = relevant_counts(q_labels, gallery_labels, exclude)
        valid = n_relevant > 0
        results["n_queries_excluded"] = int((~valid).sum())
        if not bool(valid.any()):
            raise DataError(
                "no query has another item of its class in the gallery, so retrieval metrics are "
                "undefined; evaluate on classes with at least 2 samples"
            )
        if any(m in metrics for m in k_families):
            k_needed = max(k_needed, max(k_values))
        if "r_precision" in metrics or "map@r" in metrics:
            k_needed = max(k_needed, int(n_relevant.max()))
        k_needed = max(k_needed, 1)
    if "knn_accuracy" in metrics:
        k_needed = max(k_needed, knn_k)
    if k_needed > available:
        raise InputError(
            f"the metrics need {k_needed} neighbours per query (max of k_values and knn_k) but "
            f"only {available} gallery items can match; lower k_values / knn_k"
        )

    if k_needed:
        indices, _ = knn_search(
            queries,
            None if leave_one_out else gallery,
            k_needed,
            metric=metric,
            chunk_size=chunk_size,
            backend=backend,
            faiss_index=faiss_index,
        )
        indices = indices.to(gallery.device)
        neighbour_labels = gallery_labels[indices]
        if wants_retrieval:
            assert valid is not None and n_relevant is not None
            hits = neighbour_labels[valid] == q_labels[valid].unsqueeze(1)
            if "recall@k" in metrics:
                results.update(recall_at_k(hits, k_values))
            if "precision@1" in metrics:
                results["precision@1"] = precision_at_1(hits)
            if "r_precision" in metrics:
                results["r_precision"] = r_precision(hits, n_relevant[valid])
            if "map@r" in metrics:
                results["map@r"] = map_at_r(hits, n_relevant[valid])
            if "precision@k" in metrics:
                results.update(precision_at_k(hits, k_values))
            if "precision_oml@k" in metrics:
                results.update(precision_oml_at_k(hits, n_relevant[valid], k_values))
            if "map@k" in metrics:
                results.update(map_at_k(hits, n_relevant[valid], k_values))
        if "knn_accuracy" in metrics:
            pred = knn_vote(neighbour_labels[:, :knn_k])
            results["knn_accuracy"] = float((pred == q_labels).double().mean())
    if "centroid_accuracy" in metrics:
        pred = nearest_centroid_predictions(
            queries, gallery, gallery_labels, metric=metric, exclude=exclude, chunk_size=chunk_size
        )
        results["centroid_accuracy"] = float((pred == q_labels).double().mean())
    if "mrr" in metrics:
        assert valid is not None
        ranks = first_relevant_ranks(queries, gallery, q_labels, gallery_labels, metric=metric,
                                     exclude=exclude, chunk_size=chunk_size)
        results["mrr"] = float((1.0 / ranks[valid].double()).mean())
    if "ami" in metrics:
        results.update(_clustering_with_ami(queries, q_labels, metrics, metric, seed, kmeans_backend))
    elif "nmi" in metrics or "f1" in metrics:
        scores = clustering_scores(queries, q_labels, metric=metric, seed=seed, backend=kmeans_backend)
        results.update({k: v for k, v in scores.items() if k in metrics})
    return results


# ----------------------------------------------------------------------------- extra metrics


def _check_k(hits: Tensor, k_values: Sequence[int], name: str) -> None:
    if k_values and max(k_values) > hits.shape[1]:
        raise InputError(
            f"{name}@{max(k_values)} needs at least {max(k_values)} neighbours per query, got "
            f"{hits.shape[1]}; search with a larger k"
        )


def precision_at_k(hits: Tensor, k_values: Sequence[int]) -> dict[str, float]:
    """``{"precision@K": mean over rows of (hits among the first K columns) / K}``."""
    _check_k(hits, k_values, "precision")
    cum = hits.double().cumsum(dim=1)
    return {f"precision@{k}": float((cum[:, k - 1] / k).mean()) for k in k_values}


def precision_oml_at_k(hits: Tensor, n_relevant: Tensor, k_values: Sequence[int]) -> dict[str, float]:
    """``{"precision_oml@K": mean of (hits among the first K) / min(K, R)}`` (open-metric-learning's
    precision@k); every R must be > 0."""
    _check_k(hits, k_values, "precision_oml")
    cum = hits.double().cumsum(dim=1)
    r = n_relevant.double()
    return {f"precision_oml@{k}": float((cum[:, k - 1] / r.clamp(max=k)).mean()) for k in k_values}


def map_at_k(hits: Tensor, n_relevant: Tensor, k_values: Sequence[int]) -> dict[str, float]:
    """``{"map@K": mean of (1 / min(K, R)) sum_{i<=K} P(i) rel(i)}`` (open-metric-learning's
    map@k); every R must be > 0."""
    _check_k(hits, k_values, "map")
    h = hits.double()
    ranks = torch.arange(1, hits.shape[1] + 1, device=hits.device, dtype=torch.float64)
    terms = (h.cumsum(dim=1) / ranks * h).cumsum(dim=1)
    r = n_relevant.double()
    return {f"map@{k}": float((terms[:, k - 1] / r.clamp(max=k)).mean()) for k in k_values}


def first_relevant_ranks(
    queries: Tensor,
    gallery: Tensor,
    query_labels: Tensor,
    gallery_labels: Tensor,
    *,
    metric: str = "cosine",
    exclude: Tensor | None = None,
    chunk_size: int | None = None,
) -> Tensor:
    """1-based rank of the first same-class gallery item of every query in the FULL ranking
    (better score first, lower gallery index first among equal scores; ``exclude[i]`` removed
    from query i's candidates), computed exactly in query chunks (memory ~ chunk x G scores).
    0 for a query with no same-class candidate."""
    dtype = torch.float64 if gallery.dtype == torch.float64 else torch.float32
    g = gallery.to(dtype)
    if metric == "cosine":
        g = F.normalize(g, dim=1)
        bias = None
    else:
        bias = -(g * g).sum(dim=1)  # ranking key 2 q.g - |g|^2, as the k-NN search
    n_g = g.shape[0]
    cols = torch.arange(n_g, device=g.device)
    step = chunk_size or default_chunk_size(n_g)
    out = torch.zeros(queries.shape[0], dtype=torch.long, device=g.device)
    for start in range(0, queries.shape[0], step):
        q = queries[start : start + step].to(device=g.device, dtype=dtype)
        if metric == "cosine":
            key = F.normalize(q, dim=1) @ g.T
        else:
            key = torch.addmm(bias, q, g.T, beta=1.0, alpha=2.0)
        if exclude is not None:
            own = exclude[start : start + step].to(g.device)
            rows = torch.nonzero(own >= 0).flatten()
            key[rows, own[rows]] = float("-inf")
        rel = query_labels[start : start + step].to(g.device).view(-1, 1) == gallery_labels.view(1, -1)
        if exclude is not None:
            rel[rows, own[rows]] = False
        best = key.masked_fill(~rel, float("-inf")).amax(dim=1, keepdim=True)
        # lowest index among the relevant items at the best relevant score
        first = torch.where(rel & (key == best), cols, n_g).amin(dim=1, keepdim=True)
        ahead = (key > best) | ((key == best) & (cols.unsqueeze(0) < first))
        ranks = ahead.sum(dim=1) + 1
        out[start : start + step] = torch.where(rel.any(dim=1), ranks, torch.zeros_like(ranks))
    return out


def _clustering_with_ami(
    queries: Tensor, labels: Tensor, metrics: Sequence[str], metric: str, seed: int, backend: str
) -> dict[str, float]:
    """NMI / F1 / AMI of ONE k-means run, the same run (and values) as ``clustering_scores``."""
    from sklearn.metrics import adjusted_mutual_info_score

    from deepmetric.evaluation.clustering import kmeans_assignments, nmi_score, pairwise_f1_score

    x = queries
    if metric == "cosine":
        x = F.normalize(x.double() if x.dtype == torch.float64 else x.float(), dim=1)
    y = labels.detach().cpu().numpy()
    clusters = kmeans_assignments(x, int(np.unique(y).size), seed=seed, backend=backend)
    out = {"ami": float(adjusted_mutual_info_score(y, clusters))}
    if "nmi" in metrics:
        out["nmi"] = nmi_score(y, clusters)
    if "f1" in metrics:
        out["f1"] = pairwise_f1_score(y, clusters)
    return out


def per_class_metrics(
    embeddings: Tensor | np.ndarray,
    labels: Tensor | np.ndarray,
    query_embeddings: Tensor | np.ndarray | None = None,
    query_labels: Tensor | np.ndarray | None = None,
    *,
    metric: str = "cosine",
    backend: str = "exact",
    chunk_size: int | None = None,
) -> dict[int, dict[str, float]]:
    """``{class: {"recall@1", "map@r", "count"}}``: Recall@1 and MAP@R averaged over the
    queries of each class (same modes and definitions as :func:`evaluate_embeddings`), and
    ``count`` = that class's queries that entered the means. Classes whose every query has R = 0
    are left out. The means over classes weighted by ``count`` give the global values."""
    if metric not in KNN_METRICS:
        raise ConfigError(unknown_name_message("metric", metric, KNN_METRICS))
    gallery, gallery_labels = _checked(embeddings, labels, "embeddings")
    leave_one_out = query_embeddings is None
    if leave_one_out:
        queries, q_labels = gallery, gallery_labels
    else:
        if query_labels is None:
            raise InputError("query_embeddings given without query_labels; pass both or neither")
        queries, q_labels = _checked(query_embeddings, query_labels, "query_embeddings")
        queries, q_labels = queries.to(gallery.device), q_labels.to(gallery.device)
    exclude = _resolve_exclusion(queries.shape[0], gallery.shape[0], leave_one_out, None, None, gallery.device)
    n_relevant = relevant_counts(q_labels, gallery_labels, exclude)
    valid = n_relevant > 0
    if not bool(valid.any()):
        raise DataError(
            "no query has another item of its class in the gallery, so per-class metrics are "
            "undefined; evaluate on classes with at least 2 samples"
        )
    k = int(n_relevant.max())
    indices, _ = knn_search(queries, None if leave_one_out else gallery, k, metric=metric,
                            chunk_size=chunk_size, backend=backend)
    hits = gallery_labels[indices.to(gallery.device)][valid] == q_labels[valid].unsqueeze(1)
    r = n_relevant[valid]
    within = _within_r(hits, r).double()
    ranks = torch.arange(1, hits.shape[1] + 1, device=hits.device, dtype=torch.float64)
    ap = (within.cumsum(dim=1) / ranks * within).sum(dim=1) / r.double()
    top1 = hits[:, 0].double()
    classes = q_labels[valid]
    out: dict[int, dict[str, float]] = {}
    for c in torch.unique(classes).tolist():
        sel = classes == c
        out[int(c)] = {
            "recall@1": float(top1[sel].mean()),
            "map@r": float(ap[sel].mean()),
            "count": int(sel.sum()),
        }
    return out
