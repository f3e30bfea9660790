"""Recognising a word from an utterance embedding: nearest class prototype and k-NN.

Prototype recognition (as in prototypical networks, Snell et al. 2017) represents each word by
the L2-normalised mean of its support embeddings and labels a query by the most cosine-similar
prototype. k-NN labels it by a majority vote of its k most similar support embeddings; a tie in votes goes
to the tied word whose best-ranked neighbour is nearest.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from deepmetric.errors import DataError
from deepmetric.functional.validation import check_embeddings


def class_prototypes(embeddings: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """``(classes (C,), prototypes (C, D))``: the re-normalised mean of each class's unit-normalised embeddings."""
    check_embeddings(embeddings, labels, "support embeddings")
    if embeddings.shape[0] == 0:
        raise DataError("the support set is empty; give at least one utterance per word")
    classes, inverse = torch.unique(labels, return_inverse=True)
    sums = torch.zeros(len(classes), embeddings.shape[1], dtype=embeddings.dtype, device=embeddings.device)
    sums.index_add_(0, inverse, F.normalize(embeddings, dim=1))
    return classes, F.normalize(sums, dim=1)


def prototype_predict(support: Tensor, support_labels: Tensor, queries: Tensor) -> Tensor:
    """Label of the nearest (cosine) class prototype for every query."""
    classes, protos = class_prototypes(support, support_labels)
    check_embeddings(queries, None, "query embeddings")
    return classes[(F.normalize(queries, dim=1) @ protos.T).argmax(dim=1)]


def knn_predict(support: Tensor, support_labels: Tensor, queries: Tensor, k: int = 5) -> Tensor:
    """Majority label among the ``k`` most cosine-similar support embeddings of every query."""
    check_embeddings(support, support_labels, "support embeddings")
    check_embeddings(queries, None, "query embeddings")
    k = min(k, support.shape[0])
    sims = F.normalize(queries, dim=1) @ F.normalize(support, dim=1).T
    top = sims.topk(k, dim=1).indices  # sorted by similarity, best first
    classes, inverse = torch.unique(support_labels, return_inverse=True)
    voter = inverse[top]  # (Q, k) class index of each neighbour, best first
    q = queries.shape[0]
    votes = torch.zeros(q, len(classes), dtype=torch.long, device=queries.device)
    votes.scatter_add_(1, voter, torch.ones_like(voter))
    ranks = torch.arange(k, device=queries.device).expand(q, k)
    first = torch.full((q, len(classes)), k, dtype=torch.long, device=queries.device)
    first.scatter_reduce_(1, voter, ranks, reduce="amin")
    tied = votes == votes.max(dim=1, keepdim=True).values
    return classes[first.masked_fill(~tied, k + 1).argmin(dim=1)]
