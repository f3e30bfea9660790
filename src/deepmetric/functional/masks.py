"""Label masks over an N x M pair matrix.

``pos[i, j]`` is True when samples i and j share a label (and, in the self-comparison case,
``i != j``); ``neg[i, j]`` is True when their labels differ. Losses read every pair relation from
these two boolean matrices, so mining and weighting compose by editing masks and weights.
"""

from __future__ import annotations

import torch
from torch import Tensor


def label_masks(labels: Tensor, ref_labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Return ``(pos_mask, neg_mask)``, boolean N x M.

    With ``ref_labels`` omitted, the comparison is of the batch against itself and the diagonal
    (a sample paired with itself) is excluded from the positives.
    """
    ref = labels if ref_labels is None else ref_labels
    same = labels.view(-1, 1) == ref.view(1, -1)
    neg = ~same
    if ref_labels is None:
        same = same & ~torch.eye(labels.numel(), dtype=torch.bool, device=labels.device)
    return same, neg


def upper_triangle(mask: Tensor) -> Tensor:
    """Keep only pairs with i < j, so that each unordered pair counts once."""
    return torch.triu(mask, diagonal=1)


def count_per_label(labels: Tensor) -> Tensor:
    """For every sample, how many samples in ``labels`` share its label (itself included)."""
    _, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    return counts[inverse]
