r"""Center-based structured metric learning, as pure functions (a reconstruction).

Gong, Zhong, Hu, Hua, "Joint Learning of the Center Points and Deep Metrics for Land-Use
Classification in Remote Sensing", Remote Sensing 11(1):76, 2019. Only the paper's abstract was
available; this is the reconstruction specified in the project's METHODS.md, section 4.

Learnable class centers :math:`C = (c_1, \dots, c_K)` join the batch features :math:`f_i`:

* **Center term**

  .. math::

      L_C = \frac{1}{N}\sum_i \|f_i - c_{y_i}\|_2^2
          + \frac{1}{K(K-1)} \sum_{j \ne k} [m_c - \|c_j - c_k\|_2]_+^2 ,

  pulling each feature to its class center and pushing centers at least :math:`m_c` apart
  (the second mean runs over ordered pairs of distinct classes; with K = 1 it is 0).

* **Center-based structured term**: the smooth lifted-structure loss (Song et al., CVPR 2016)

  .. math::

      J_{ij} = \log\Big(\sum_{k: y_k \ne y_i} e^{\alpha - d_{ik}}
                      + \sum_{l: y_l \ne y_j} e^{\alpha - d_{jl}}\Big) + d_{ij}, \qquad
      L_S = \frac{1}{2|P|} \sum_{(i,j) \in P} [J_{ij}]_+^2 ,

  run on the UNION of the N batch features and the K centers (center k labelled k), so every
  feature also forms positive pairs with its own center and negative pairs with all other
  centers, and centers of different classes are negatives of each other.
"""

from __future__ import annotations

import torch
from torch import Tensor

from deepmetric.errors import InputError
from deepmetric.functional.distances import euclidean_distance_matrix
from deepmetric.functional.masks import label_masks


def check_center_labels(labels: Tensor, num_classes: int) -> None:
    """Raise :class:`InputError` unless every label indexes a center (0 <= y < num_classes)."""
    if labels.numel() == 0:
        return
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
        raise InputError(
            f"labels must lie in [0, {num_classes}) to index the {num_classes} class centers, "
            f"got values in [{low}, {high}]; remap labels to 0..num_classes-1 or raise num_classes"
        )


def center_pull(embeddings: Tensor, labels: Tensor, centers: Tensor) -> Tensor:
    r""":math:`\frac{1}{N}\sum_i \|f_i - c_{y_i}\|_2^2` (0 for an empty batch)."""
    if embeddings.shape[0] == 0:
        return embeddings.sum() * 0.0 + centers.sum() * 0.0
    return (embeddings - centers[labels]).pow(2).sum(dim=1).mean()


def center_push(centers: Tensor, margin: float = 1.0) -> Tensor:
    r""":math:`\frac{1}{K(K-1)}\sum_{j \ne k} [m_c - \|c_j - c_k\|_2]_+^2`; 0 (connected) for K = 1.

    Distances use :func:`~deepmetric.functional.distances.euclidean_distance_matrix`, whose
    gradient is 0 (not NaN) for coinciding centers.
    """
    k = centers.shape[0]
    if k < 2:
        return centers.sum() * 0.0
    dist = euclidean_distance_matrix(centers)
    off = ~torch.eye(k, dtype=torch.bool, device=centers.device)
    return (margin - dist[off]).clamp_min(0.0).pow(2).mean()


def center_loss(embeddings: Tensor, labels: Tensor, centers: Tensor, margin: float = 1.0) -> Tensor:
    """:math:`L_C` = :func:`center_pull` + :func:`center_push` (see the module docstring)."""
    return center_pull(embeddings, labels, centers) + center_push(centers, margin)


def union_with_centers(embeddings: Tensor, labels: Tensor, centers: Tensor) -> tuple[Tensor, Tensor]:
    """Stack the N features and the K centers into (N + K) x D, labels ``[labels, 0..K-1]``."""
    center_labels = torch.arange(centers.shape[0], device=labels.device, dtype=labels.dtype)
    return torch.cat([embeddings, centers], dim=0), torch.cat([labels, center_labels], dim=0)


def center_structured_loss(
    embeddings: Tensor, labels: Tensor, centers: Tensor, alpha: float = 1.0
) -> Tensor:
    r""":math:`L_S` of the union of features and centers (see the module docstring).

    Uses the project's lifted-structure function
    (:func:`deepmetric.functional.lifted.lifted_structure_loss`) on the Euclidean distance
    matrix of the union, with margin :math:`\alpha`. Every feature has a positive pair (its own
    center), so the term is never empty when N >= 1; with K = 1 and no negatives it follows the
    lifted function's empty-set value.
    """
    from deepmetric.functional.lifted import lifted_structure_loss

    points, point_labels = union_with_centers(embeddings, labels, centers)
    dist = euclidean_distance_matrix(points)
    pos_mask, neg_mask = label_masks(point_labels)
    return lifted_structure_loss(dist, pos_mask, neg_mask, margin=alpha)


@torch.no_grad()
def ema_centers(
    centers: Tensor, embeddings: Tensor, labels: Tensor, momentum: float = 0.9
) -> Tensor:
    r"""Moving-average center update (no gradient): for every class k present in the batch,
    :math:`c_k \leftarrow m\,c_k + (1 - m)\,\bar f_k` with :math:`\bar f_k` the batch mean of
    class k; absent classes keep their center. Returns the new K x D centers."""
    k = centers.shape[0]
    sums = torch.zeros_like(centers).index_add_(0, labels, embeddings.to(centers.dtype))
    counts = torch.bincount(labels, minlength=k).to(centers.dtype).unsqueeze(1)
    present = counts > 0
    means = sums / counts.clamp_min(1.0)
    return torch.where(present, momentum * centers + (1.0 - momentum) * means, centers)


def nearest_center(embeddings: Tensor, centers: Tensor) -> Tensor:
    """Index of the nearest center (Euclidean) for every row; ties go to the lowest index."""
    dist = euclidean_distance_matrix(embeddings, centers, squared=True)
    return dist.argmin(dim=1)
