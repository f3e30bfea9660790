"""Evaluation: exact or faiss k-NN search and the metrics computed from one k-NN pass.

``knn_search`` finds neighbours (exact in bounded memory, or faiss; deterministic ties);
``evaluate_embeddings`` computes Recall@K, Precision@1, R-precision, MAP@R, NMI, F1, k-NN and
nearest-centroid accuracy of a set of embeddings in one call.
"""

from deepmetric.evaluation.clustering import (
    clustering_scores,
    kmeans_assignments,
    nmi_score,
    pairwise_f1_score,
)
from deepmetric.evaluation.knn import KnnResult, default_chunk_size, knn_search
from deepmetric.evaluation.metrics import (
    ALL_METRICS,
    DEFAULT_METRICS,
    evaluate_embeddings,
    knn_vote,
    map_at_r,
    nearest_centroid_predictions,
    neighbour_hits,
    precision_at_1,
    r_precision,
    recall_at_k,
    relevant_counts,
)

__all__ = [
    "ALL_METRICS",
    "DEFAULT_METRICS",
    "KnnResult",
    "clustering_scores",
    "default_chunk_size",
    "evaluate_embeddings",
    "kmeans_assignments",
    "knn_search",
    "knn_vote",
    "map_at_r",
    "nearest_centroid_predictions",
    "neighbour_hits",
    "nmi_score",
    "pairwise_f1_score",
    "precision_at_1",
    "r_precision",
    "recall_at_k",
    "relevant_counts",
]
