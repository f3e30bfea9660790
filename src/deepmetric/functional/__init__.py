"""Pure tensor maths: pairwise matrices, label masks and the losses as functions of them."""

from deepmetric.functional.distances import (
    cosine_similarity_matrix,
    dot_product_matrix,
    euclidean_distance_matrix,
    is_similarity,
    pairwise_matrix,
    safe_sqrt,
    squared_euclidean_distance_matrix,
)
from deepmetric.functional.masks import count_per_label, label_masks, upper_triangle
from deepmetric.functional.validation import check_embeddings

__all__ = [
    "check_embeddings",
    "cosine_similarity_matrix",
    "count_per_label",
    "dot_product_matrix",
    "euclidean_distance_matrix",
    "is_similarity",
    "label_masks",
    "pairwise_matrix",
    "safe_sqrt",
    "squared_euclidean_distance_matrix",
    "upper_triangle",
]
