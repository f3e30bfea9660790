"""Pairwise similarity and distance matrices.

Every pair-based loss and every k-NN search in deepmetric starts from one of these matrices.
All functions take row-major embeddings ``x`` (N x D) and optionally ``y`` (M x D); when ``y``
is omitted the matrix is of ``x`` against itself.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def cosine_similarity_matrix(x: Tensor, y: Tensor | None = None, eps: float = 1e-12) -> Tensor:
    r"""Cosine similarities :math:`s_{ij} = \hat x_i \cdot \hat y_j` with :math:`\hat v = v / \|v\|_2`.

    Rows are normalised first (a zero row stays zero rather than producing NaN), so the result
    lies in [-1, 1]. Returns an N x M matrix (N x N when ``y`` is ``None``).
    """
    xn = F.normalize(x, p=2, dim=1, eps=eps)
    yn = xn if y is None else F.normalize(y, p=2, dim=1, eps=eps)
    return xn @ yn.T


def dot_product_matrix(x: Tensor, y: Tensor | None = None) -> Tensor:
    r"""Inner products :math:`s_{ij} = x_i \cdot y_j` (equal to cosine similarity for unit vectors)."""
    return x @ (x if y is None else y).T


def squared_euclidean_distance_matrix(x: Tensor, y: Tensor | None = None) -> Tensor:
    r"""Squared Euclidean distances :math:`\|x_i - y_j\|_2^2 = \|x_i\|^2 + \|y_j\|^2 - 2 x_i \cdot y_j`.

    Computed from the Gram matrix (O(N M) memory, never N x M x D), clamped at zero against
    round-off. When ``y`` is ``None`` the diagonal is exactly zero.
    """
    same = y is None
    y = x if y is None else y
    x_sq = (x * x).sum(dim=1, keepdim=True)
    y_sq = x_sq if same else (y * y).sum(dim=1, keepdim=True)
    d2 = (x_sq + y_sq.T - 2.0 * (x @ y.T)).clamp_min(0.0)
    if same:
        d2 = d2.masked_fill(torch.eye(d2.shape[0], dtype=torch.bool, device=d2.device), 0.0)
    return d2


def safe_sqrt(t: Tensor, eps: float = 1e-16) -> Tensor:
    """Square root whose value and gradient are 0 (not NaN or inf) where ``t <= eps``."""
    tiny = t <= eps
    return torch.sqrt(t.masked_fill(tiny, 1.0)).masked_fill(tiny, 0.0)


def euclidean_distance_matrix(x: Tensor, y: Tensor | None = None, squared: bool = False) -> Tensor:
    r"""Euclidean distances :math:`d_{ij} = \|x_i - y_j\|_2` (or their squares if ``squared``).

    At zero distance (the diagonal, duplicate embeddings) the value is 0 and the gradient is 0,
    never NaN: :func:`safe_sqrt` masks the non-differentiable point of the square root.
    """
    d2 = squared_euclidean_distance_matrix(x, y)
    return d2 if squared else safe_sqrt(d2)


def pairwise_matrix(x: Tensor, y: Tensor | None = None, metric: str = "euclidean") -> Tensor:
    """Dispatch on ``metric``: ``"euclidean"`` (distance), ``"squared_euclidean"``,
    ``"cosine"`` (similarity) or ``"dot"`` (similarity)."""
    if metric == "euclidean":
        return euclidean_distance_matrix(x, y)
    if metric == "squared_euclidean":
        return squared_euclidean_distance_matrix(x, y)
    if metric == "cosine":
        return cosine_similarity_matrix(x, y)
    if metric == "dot":
        return dot_product_matrix(x, y)
    raise ValueError(
        f"unknown metric '{metric}'; use one of 'euclidean', 'squared_euclidean', 'cosine', 'dot'"
    )


def is_similarity(metric: str) -> bool:
    """True when larger values of ``metric`` mean closer (cosine, dot), False for distances."""
    return metric in ("cosine", "dot")
