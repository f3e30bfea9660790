"""Shared test data for the k-NN and metric tests: embeddings whose scores are exact in float32."""

from __future__ import annotations

import torch


def exact_score_embeddings(n: int, metric: str, generator: torch.Generator) -> torch.Tensor:
    """n embeddings whose cosine similarities or Euclidean distances are exact in float32, so
    ties are real ties and any summation order gives the same score.

    cosine: entries in {-1, 0, 1} with exactly 4 non-zeros (norm 2, so normalising is exact);
    euclidean: small integers (squared distances are exact integers).
    """
    if metric == "cosine":
        x = torch.zeros(n, 6)
        for i in range(n):
            cols = torch.randperm(6, generator=generator)[:4]
            x[i, cols] = torch.randint(0, 2, (4,), generator=generator).float() * 2 - 1
        return x
    return torch.randint(-2, 3, (n, 3), generator=generator).float()
