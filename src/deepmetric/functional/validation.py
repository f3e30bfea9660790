"""Checks on tensors entering the library, so bad input fails loudly with a useful message."""

from __future__ import annotations

import torch
from torch import Tensor

from deepmetric.errors import InputError


def check_embeddings(embeddings: Tensor, labels: Tensor | None = None, name: str = "embeddings") -> None:
    """Raise :class:`InputError` unless ``embeddings`` is a finite N x D float tensor and
    ``labels`` (if given) is a 1-D integer tensor of length N on the same device."""
    if not isinstance(embeddings, Tensor):
        raise InputError(f"{name} must be a torch.Tensor, got {type(embeddings).__name__}")
    if embeddings.dim() != 2:
        raise InputError(
            f"{name} must be 2-D (N samples x D dims), got shape {tuple(embeddings.shape)}; "
            "flatten or pool the model output first"
        )
    if not embeddings.is_floating_point():
        raise InputError(f"{name} must be a float tensor, got {embeddings.dtype}")
    if not bool(torch.isfinite(embeddings.sum())) and not bool(torch.isfinite(embeddings).all()):
        bad = int((~torch.isfinite(embeddings)).any(dim=1).sum())
        raise InputError(
            f"{name} contain NaN or infinite values in {bad} of {embeddings.shape[0]} rows; "
            "lower the learning rate, enable gradient clipping, or check the input data"
        )
    if labels is None:
        return
    if not isinstance(labels, Tensor):
        raise InputError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
    if labels.dim() != 1:
        raise InputError(f"labels must be 1-D, got shape {tuple(labels.shape)}")
    if labels.numel() != embeddings.shape[0]:
        raise InputError(
            f"{name} have {embeddings.shape[0]} rows but labels have {labels.numel()} entries; "
            "pass one label per embedding"
        )
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise InputError(f"labels must be an integer tensor, got {labels.dtype}")


def check_pair_inputs(
    matrix: Tensor, pos_mask: Tensor, neg_mask: Tensor, square: bool = False, name: str = "matrix"
) -> None:
    """Raise :class:`InputError` unless ``matrix`` is a 2-D float tensor and both masks are
    boolean tensors of the same shape (and, with ``square``, the matrix is N x N)."""
    if matrix.dim() != 2 or not matrix.is_floating_point():
        raise InputError(
            f"{name} must be a 2-D float pair matrix, got shape {tuple(matrix.shape)} and dtype "
            f"{matrix.dtype}; build it with deepmetric.functional.pairwise_matrix"
        )
    for mask_name, mask in (("pos_mask", pos_mask), ("neg_mask", neg_mask)):
        if mask.shape != matrix.shape or mask.dtype != torch.bool:
            raise InputError(
                f"{mask_name} must be a boolean tensor of the {name}'s shape {tuple(matrix.shape)}, "
                f"got shape {tuple(mask.shape)} and dtype {mask.dtype}; "
                "build the masks with deepmetric.functional.label_masks"
            )
    if square and matrix.shape[0] != matrix.shape[1]:
        raise InputError(
            f"this loss needs a square N x N {name} of the batch against itself (it reads rows of "
            f"positives), got shape {tuple(matrix.shape)}; pass the self-comparison matrix"
        )
