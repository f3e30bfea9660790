"""Clustering quality of embeddings: NMI and pairwise F1 of k-means against the class labels.

Protocol of the deep metric learning literature (e.g. Song et al., "Deep Metric Learning via
Lifted Structured Feature Embedding", CVPR 2016): run k-means with k = number of classes on the
embeddings, then compare the cluster assignment with the true labels.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from deepmetric.errors import ConfigError, DataError, unknown_name_message

KMEANS_BACKENDS = ("sklearn", "faiss")


def _to_numpy(x: Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def kmeans_assignments(
    embeddings: Tensor | np.ndarray,
    n_clusters: int,
    *,
    seed: int = 0,
    n_init: int = 1,
    max_iter: int = 100,
    backend: str = "sklearn",
) -> np.ndarray:
    """Cluster index (0 .. n_clusters-1) of every row of ``embeddings`` by k-means (Lloyd).

    ``backend="sklearn"`` uses :class:`sklearn.cluster.KMeans` (k-means++ initialisation,
    ``n_init`` restarts, seeded); ``backend="faiss"`` uses ``faiss.Kmeans`` (much faster for
    tens of thousands of clusters, also seeded).
    """
    if backend not in KMEANS_BACKENDS:
        raise ConfigError(unknown_name_message("k-means backend", backend, KMEANS_BACKENDS))
    x = np.ascontiguousarray(_to_numpy(embeddings), dtype=np.float32)
    if not 1 <= n_clusters <= x.shape[0]:
        raise DataError(
            f"k-means needs 1 <= n_clusters <= number of samples ({x.shape[0]}), got {n_clusters}; "
            "evaluate on more samples"
        )
    if backend == "faiss":
        from deepmetric.evaluation.knn import _import_faiss  # noqa: PLC0415

        faiss = _import_faiss()
        km = faiss.Kmeans(x.shape[1], n_clusters, niter=max_iter, nredo=n_init, seed=seed, verbose=False)
        km.cp.min_points_per_centroid = 1
        km.train(x)
        _, assign = km.index.search(x, 1)
        return assign.reshape(-1).astype(np.int64)
    from sklearn.cluster import KMeans  # noqa: PLC0415  (heavy import, only when clustering)

    km = KMeans(n_clusters=n_clusters, n_init=n_init, max_iter=max_iter, random_state=seed)
    return km.fit_predict(x).astype(np.int64)


def nmi_score(labels: Tensor | np.ndarray, clusters: Tensor | np.ndarray) -> float:
    r"""Normalised mutual information :math:`I(Y; C) / \tfrac12 (H(Y) + H(C))` (arithmetic mean
    normalisation, as :func:`sklearn.metrics.normalized_mutual_info_score`)."""
    from sklearn.metrics import normalized_mutual_info_score  # noqa: PLC0415

    return float(normalized_mutual_info_score(_to_numpy(labels), _to_numpy(clusters)))


def _pairs(counts: np.ndarray) -> float:
    counts = counts.astype(np.float64)
    return float((counts * (counts - 1) / 2).sum())


def pairwise_f1_score(labels: Tensor | np.ndarray, clusters: Tensor | np.ndarray) -> float:
    r"""F1 of the pairwise "same cluster" decisions against "same class".

    Over all unordered pairs of samples: TP = pairs in the same cluster AND the same class,
    precision = TP / (pairs in the same cluster), recall = TP / (pairs of the same class),
    :math:`F_1 = 2PR / (P + R)`. Computed from the contingency table in O(N), not over pairs.
    When there is no same-cluster pair or no same-class pair (or TP = 0) the score is 0.
    """
    y = _to_numpy(labels).reshape(-1)
    c = _to_numpy(clusters).reshape(-1)
    if y.shape != c.shape:
        raise DataError(f"labels ({y.size}) and clusters ({c.size}) must have the same length")
    _, y_codes = np.unique(y, return_inverse=True)
    _, c_codes = np.unique(c, return_inverse=True)
    joint = y_codes.astype(np.int64) * (int(c_codes.max(initial=0)) + 1) + c_codes
    tp = _pairs(np.unique(joint, return_counts=True)[1])
    same_cluster = _pairs(np.bincount(c_codes))
    same_class = _pairs(np.bincount(y_codes))
    if tp == 0 or same_cluster == 0 or same_class == 0:
        return 0.0
    precision, recall = tp / same_cluster, tp / same_class
    return float(2 * precision * recall / (precision + recall))


def clustering_scores(
    embeddings: Tensor | np.ndarray,
    labels: Tensor | np.ndarray,
    *,
    metric: str = "cosine",
    seed: int = 0,
    n_init: int = 1,
    max_iter: int = 100,
    backend: str = "sklearn",
) -> dict[str, float]:
    """``{"nmi": ..., "f1": ...}`` of k-means with k = number of distinct labels.

    With ``metric="cosine"`` the embeddings are L2-normalised before clustering (so k-means
    groups by angle, matching the retrieval metric).
    """
    x = embeddings if isinstance(embeddings, Tensor) else torch.as_tensor(np.asarray(embeddings))
    if metric == "cosine":
        x = torch.nn.functional.normalize(x.double() if x.dtype == torch.float64 else x.float(), dim=1)
    y = _to_numpy(labels)
    n_classes = int(np.unique(y).size)
    clusters = kmeans_assignments(
        x, n_classes, seed=seed, n_init=n_init, max_iter=max_iter, backend=backend
    )
    return {"nmi": nmi_score(y, clusters), "f1": pairwise_f1_score(y, clusters)}
