"""Person re-identification evaluation: CMC and mAP under the Market-1501 / MARS protocol.

For a query of identity p seen by camera c, the gallery is ranked by distance; gallery items of
the same identity AND the same camera are removed (they are trivially easy and not what re-ID
asks), as are "junk" items (identity ``junk_id``, -1 in Market-1501 and MARS). Distractors
(identity 0 in Market-1501, or any identity absent from the queries) stay as negatives.

* CMC rank-k: fraction of (valid) queries whose first correct match is within the top k.
* mAP: mean over valid queries of average precision, AP = (1/|G_p|) * sum over the correct
  matches at 1-based ranks r_1 < r_2 < ... of (i / r_i) (non-interpolated, as in most re-ID
  code bases; the original Market-1501 MATLAB script averages adjacent precisions instead).

A query with no valid correct match in the gallery is skipped and counted in
``"n_queries_without_match"``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from deepmetric.errors import InputError
from deepmetric.functional.distances import cosine_similarity_matrix, euclidean_distance_matrix


def _as_numpy(values: Tensor | np.ndarray | Sequence[int], name: str, n: int) -> np.ndarray:
    arr = values.detach().cpu().numpy() if isinstance(values, Tensor) else np.asarray(values)
    if arr.shape != (n,):
        raise InputError(f"{name} must have one entry per item ({n}), got shape {arr.shape}")
    return arr


def reid_distance(query: Tensor, gallery: Tensor, metric: str = "euclidean") -> Tensor:
    """Query x gallery distance matrix: Euclidean, or 1 - cosine similarity."""
    if metric == "euclidean":
        return euclidean_distance_matrix(query, gallery)
    if metric == "cosine":
        return 1.0 - cosine_similarity_matrix(query, gallery)
    raise InputError(f"unknown re-ID metric '{metric}'; use 'euclidean' or 'cosine'")


def evaluate_reid(
    distances: Tensor | np.ndarray,
    query_ids: Tensor | np.ndarray | Sequence[int],
    gallery_ids: Tensor | np.ndarray | Sequence[int],
    query_cams: Tensor | np.ndarray | Sequence[int],
    gallery_cams: Tensor | np.ndarray | Sequence[int],
    ranks: Sequence[int] = (1, 5, 10, 20),
    junk_id: int | None = -1,
) -> dict[str, float]:
    """CMC at ``ranks`` and mAP from a query x gallery distance matrix (smaller = closer).

    Returns ``{"cmc@1": ..., "cmc@5": ..., "map": ..., "n_queries": ..., "n_queries_without_match": ...}``
    with CMC and mAP as fractions in [0, 1]. Ties in distance are broken by gallery order.
    """
    dist = distances.detach().cpu().numpy() if isinstance(distances, Tensor) else np.asarray(distances)
    if dist.ndim != 2:
        raise InputError(f"distances must be a (queries x gallery) matrix, got shape {dist.shape}")
    if not np.isfinite(dist).all():
        raise InputError("distances contain NaN or inf; check the embeddings for NaN values")
    nq, ng = dist.shape
    if nq == 0 or ng == 0:
        raise InputError(f"empty query ({nq}) or gallery ({ng}) set; both need at least one item")
    q_ids, g_ids = _as_numpy(query_ids, "query_ids", nq), _as_numpy(gallery_ids, "gallery_ids", ng)
    q_cams, g_cams = _as_numpy(query_cams, "query_cams", nq), _as_numpy(gallery_cams, "gallery_cams", ng)
    order = np.argsort(dist, axis=1, kind="stable")
    max_rank = max(ranks)
    cmc_hits = np.zeros(max_rank)
    aps, skipped = [], 0
    for q in range(nq):
        ranked = order[q]
        invalid = (g_ids[ranked] == q_ids[q]) & (g_cams[ranked] == q_cams[q])
        if junk_id is not None:
            invalid |= g_ids[ranked] == junk_id
        matches = (g_ids[ranked] == q_ids[q])[~invalid]
        if not matches.any():
            skipped += 1
            continue
        hit_ranks = np.flatnonzero(matches)  # 0-based positions of correct matches
        if hit_ranks[0] < max_rank:
            cmc_hits[hit_ranks[0]:] += 1
        aps.append(float(np.mean(np.arange(1, len(hit_ranks) + 1) / (hit_ranks + 1))))
    valid = nq - skipped
    if valid == 0:
        raise InputError(
            "no query has a correct match in the gallery from another camera; "
            "check the identity and camera labels of the query and gallery sets"
        )
    out = {f"cmc@{k}": float(cmc_hits[k - 1] / valid) for k in ranks}
    out.update({"map": float(np.mean(aps)), "n_queries": float(valid), "n_queries_without_match": float(skipped)})
    return out


def k_reciprocal_rerank(
    query: Tensor, gallery: Tensor, k1: int = 20, k2: int = 6, lambda_value: float = 0.3
) -> Tensor:
    r"""Re-ranked query x gallery distances (Zhong, Zheng, Cao, Li, CVPR 2017, "Re-ranking Person
    Re-identification with k-reciprocal Encoding").

    Over all items (queries and gallery) with Euclidean distances d, rescaled per row to [0, 1]:

    1. k-reciprocal neighbours :math:`R(i, k_1) = \{j \in N(i, k_1) : i \in N(j, k_1)\}`, expanded by
       :math:`R(j, k_1/2)` of each member j whose set overlaps :math:`R(i, k_1)` by more than 2/3.
    2. :math:`V_{ij} = e^{-d_{ij}}` on the expanded set, 0 elsewhere, each row normalised to sum 1;
       local query expansion replaces :math:`V_i` by the mean of :math:`V_j` over :math:`N(i, k_2)`.
    3. Jaccard distance :math:`d_J(i, j) = 1 - \sum_k \min(V_{ik}, V_{jk}) / \sum_k \max(V_{ik}, V_{jk})`.
    4. Final distance :math:`(1 - \lambda) d_J + \lambda d`.

    Memory is O((Q + G)^2): meant for evaluation sets up to tens of thousands of items.
    """
    feats = torch.cat([query, gallery]).double()
    n, nq = feats.shape[0], query.shape[0]
    dist = euclidean_distance_matrix(feats)
    dist = dist / dist.max(dim=1, keepdim=True).values.clamp_min(1e-12)
    k1 = min(k1, n - 1)
    neighbours = torch.argsort(dist, dim=1, stable=True)[:, : k1 + 1]  # includes the item itself
    member = torch.zeros(n, n, dtype=torch.bool)
    member.scatter_(1, neighbours, True)
    reciprocal = member & member.T  # j in N(i) and i in N(j)
    half = max(1, int(round(k1 / 2)))
    member_half = torch.zeros(n, n, dtype=torch.bool)
    member_half.scatter_(1, neighbours[:, : half + 1], True)
    reciprocal_half = member_half & member_half.T
    expanded = reciprocal.clone()
    for i in range(n):
        for j in torch.nonzero(reciprocal[i]).flatten().tolist():
            cand = reciprocal_half[j]
            if (cand & reciprocal[i]).sum() > 2.0 / 3.0 * cand.sum():
                expanded[i] |= cand
    weights = torch.where(expanded, torch.exp(-dist), torch.zeros_like(dist))
    weights = weights / weights.sum(dim=1, keepdim=True)
    if k2 > 1:
        weights = weights[neighbours[:, :k2]].mean(dim=1)
    v_q, v_g = weights[:nq], weights[nq:]
    # rows of V sum to 1, so sum_k max(V_ik, V_jk) = 2 - sum_k min(V_ik, V_jk)
    chunk = max(1, int(2e7 // max(1, v_g.numel())))
    inter = torch.cat([
        torch.minimum(v_q[s:s + chunk, None, :], v_g[None, :, :]).sum(-1) for s in range(0, nq, chunk)
    ])
    union = 2.0 - inter
    jaccard = 1.0 - inter / union.clamp_min(1e-12)
    final = (1.0 - lambda_value) * jaccard + lambda_value * dist[:nq, nq:]
    return final.to(query.dtype)
