"""Exact k-NN on the CPU by cache-sized blocks, threshold pruning and (leave-one-out) symmetry.

The plain exact search (:func:`deepmetric.evaluation.knn.knn_search` on a GPU, or with float64)
computes a chunk of queries against the whole gallery and runs ``torch.topk`` over every score.
On a CPU two things dominate that: writing and re-reading a score matrix far larger than the
cache, and ``topk`` touching every score. This module does the same exact search differently:

* Scores are computed in ``B x B`` blocks (``B = 2048``: 16 MiB of float32) that stay in cache.
* Every query keeps its running top ``k`` (:class:`RunningTopK`). Its current ``k``-th best score
  ``tau`` is a lower bound of the final ``k``-th best, so only scores ``>= tau`` can still enter
  the result. Scores are first reduced to the maximum of strided groups of 32 (one vectorised
  pass); only groups whose maximum reaches ``tau`` are looked at element by element. Once
  ``tau`` is warm a block row yields few candidates (about ``k * B / n`` after ``n`` gallery
  items have been seen), so selecting costs little next to the matrix product.
* Leave-one-out search of a set against itself is symmetric: score ``s(a, b) = s(b, a)``, so each
  off-diagonal block ``(i, j), i < j`` is computed once and serves the queries of block ``i``
  (rows) and of block ``j`` (columns). That halves the matrix-product work.

Exactness and ties: a candidate is kept when its score is ``>= tau`` (ties included), and the
running lists are merged on an int64 key that orders by (score descending, gallery index
ascending), so the result is exactly the sorted top-``k`` with the lower gallery index first
among equal scores, including at the ``k``-th place: the same contract as the plain path.

Euclidean distance is ranked by ``-|a - b|^2`` (larger = nearer). Query against gallery: one
product of the augmented vectors ``[a, |a|^2, 1] . [2b, -1, -|b|^2]`` (:func:`score_vectors`).
Leave-one-out: ``2 a.b - (|a|^2 + |b|^2)``, which is bit-for-bit symmetric, so a pair scored
once gives both of its members the same value.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

#: Rows and columns of one score block (2048 x 2048 float32 = 16 MiB).
DEFAULT_BLOCK = 2048
#: Elements per pruning group (strided, so the group maxima are one vectorised reduction).
GROUP = 32
_EMPTY = torch.iinfo(torch.int64).min
_LOW_BITS = 2**32


def order_keys(values: Tensor, cols: Tensor) -> Tensor:
    """int64 keys ordering float32 ``values`` descending, then ``cols`` ascending.

    The float's bit pattern is mapped to an int32 that sorts like the float (negative floats
    have their magnitude bits flipped; ``-0.0`` is first turned into ``+0.0`` so that the two
    zeros tie), shifted into the high 32 bits; the low 32 bits hold ``2**32 - 1 - col``.
    """
    bits = (values + 0.0).view(torch.int32)
    ordered = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits).to(torch.int64)
    return ordered * _LOW_BITS + (_LOW_BITS - 1 - cols)


def decode_keys(keys: Tensor) -> tuple[Tensor, Tensor]:
    """Inverse of :func:`order_keys`: (float32 values, int64 columns)."""
    high = torch.div(keys, _LOW_BITS, rounding_mode="floor")
    cols = _LOW_BITS - 1 - (keys - high * _LOW_BITS)
    ordered = high.to(torch.int32)
    bits = torch.where(ordered < 0, ordered ^ 0x7FFFFFFF, ordered)
    return bits.view(torch.float32), cols


class RunningTopK:
    """The best ``k`` (score, gallery index) pairs seen so far for every query, as int64 keys."""

    def __init__(self, n_queries: int, k: int, device: torch.device) -> None:
        self.k = k
        self.keys = torch.full((n_queries, k), _EMPTY, dtype=torch.int64, device=device)

    def thresholds(self, start: int, stop: int) -> Tensor:
        """Current ``k``-th best score of queries ``start:stop`` (``-inf`` while fewer than k)."""
        kth = self.keys[start:stop, -1]
        values, _ = decode_keys(kth)
        return torch.where(kth == _EMPTY, torch.full_like(values, float("-inf")), values)

    def _merge(self, rows: Tensor, new_keys: Tensor) -> None:
        merged = torch.cat([self.keys.index_select(0, rows), new_keys], dim=1)
        self.keys[rows] = torch.topk(merged, self.k, dim=1, sorted=True).values

    def merge_block(self, start: int, scores: Tensor, col_offset: int) -> None:
        """Merge a whole block (rows = queries ``start:``, columns from ``col_offset``).

        Only scores reaching the block's own ``k``-th best can matter. A lower bound of that
        is the ``k``-th largest maximum of the strided groups (``k`` distinct groups hold ``k``
        distinct scores at least that large), so the block is pruned with it first.
        """
        n_rows, n_cols = scores.shape
        k = min(self.k, n_cols)
        if n_cols % GROUP == 0 and n_cols // GROUP >= k:
            group_max = scores.view(n_rows, GROUP, n_cols // GROUP).amax(dim=1)
            floor = torch.topk(group_max, k, dim=1, sorted=False).values.amin(dim=1)
        else:
            floor = torch.topk(scores, k, dim=1, sorted=False).values.amin(dim=1)
        tau = torch.maximum(floor, self.thresholds(start, start + n_rows))
        rows, cols, values = _row_candidates(scores, tau)
        self.merge_sparse(start, rows, cols + col_offset, values)

    def merge_sparse(self, start: int, rows: Tensor, cols: Tensor, values: Tensor) -> None:
        """Merge candidates ``(start + rows[i], cols[i], values[i])``; rows need not be sorted."""
        if rows.numel() == 0:
            return
        order = torch.argsort(rows, stable=True)
        rows, keys = rows[order], order_keys(values[order], cols[order])
        touched, counts = torch.unique_consecutive(rows, return_counts=True)
        first = torch.cumsum(counts, 0) - counts
        slot = torch.repeat_interleave(torch.arange(touched.numel(), device=rows.device), counts)
        position = torch.arange(rows.numel(), device=rows.device) - first[slot]
        padded = torch.full(
            (touched.numel(), int(counts.max())), _EMPTY, dtype=torch.int64, device=rows.device
        )
        padded[slot, position] = keys
        self._merge(touched + start, padded)

    def result(self) -> tuple[Tensor, Tensor]:
        """(indices, scores), each Q x k, best first."""
        values, cols = decode_keys(self.keys)
        return cols, values


class _Scratch:
    """Reused block buffers: a fresh 16 MiB allocation per block costs page faults."""

    def __init__(self, block: int, like: Tensor, with_bias: bool = False) -> None:
        self.buffer = torch.empty(block * block, dtype=like.dtype, device=like.device)
        self.bias = torch.empty_like(self.buffer) if with_bias else None

    def product(
        self, a: Tensor, b: Tensor, a_sq: Tensor | None = None, b_sq: Tensor | None = None
    ) -> Tensor:
        """``a @ b.T``, or ``2 a @ b.T - (a_sq + b_sq)`` given squared norms, in the buffer."""
        shape = (a.shape[0], b.shape[0])
        out = self.buffer[: shape[0] * shape[1]].view(shape)
        if a_sq is None or b_sq is None or self.bias is None:
            return torch.mm(a, b.T, out=out)
        bias = self.bias[: shape[0] * shape[1]].view(shape)
        torch.add(a_sq.unsqueeze(1), b_sq.unsqueeze(0), out=bias)
        return torch.addmm(bias, a, b.T, beta=-1.0, alpha=2.0, out=out)


def _row_candidates(block: Tensor, tau: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(row, column, score) of every ``block[row, column] >= tau[row]``."""
    n_rows, n_cols = block.shape
    if n_cols % GROUP:
        rows, cols = torch.nonzero(block >= tau.unsqueeze(1), as_tuple=True)
        return rows, cols, block[rows, cols]
    stride = n_cols // GROUP
    grouped = block.view(n_rows, GROUP, stride)  # group (r, h) = block[r, h::stride]
    rows, heads = torch.nonzero(grouped.amax(dim=1) >= tau.unsqueeze(1), as_tuple=True)
    values = grouped[rows, :, heads]  # n x GROUP
    kept = torch.nonzero((values >= tau[rows].unsqueeze(1)).view(-1)).squeeze(1)
    member = kept % GROUP
    candidate = torch.div(kept, GROUP, rounding_mode="floor")
    return rows[candidate], heads[candidate] + stride * member, values.view(-1)[kept]


def _column_candidates(block: Tensor, tau: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(row, column, score) of every ``block[row, column] >= tau[column]``."""
    n_rows, n_cols = block.shape
    if n_rows % GROUP:
        rows, cols = torch.nonzero(block >= tau.unsqueeze(0), as_tuple=True)
        return rows, cols, block[rows, cols]
    stride = n_rows // GROUP
    grouped = block.view(GROUP, stride, n_cols)  # group (h, c) = block[h::stride, c]
    heads, cols = torch.nonzero(grouped.amax(dim=0) >= tau.unsqueeze(0), as_tuple=True)
    values = grouped[:, heads, cols]  # GROUP x n
    kept = torch.nonzero((values >= tau[cols].unsqueeze(0)).view(-1)).squeeze(1)
    member = torch.div(kept, heads.numel(), rounding_mode="floor")
    candidate = kept - member * heads.numel()
    return heads[candidate] + stride * member, cols[candidate], values.view(-1)[kept]


def symmetric_search(
    vectors: Tensor,
    k: int,
    exclude_self: bool,
    sq_norms: Tensor | None = None,
    block: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Top-``k`` neighbours of every row of ``vectors`` among the rows themselves.

    Scores: ``x_a . x_b`` (cosine, for unit rows), or with ``sq_norms`` given
    ``2 x_a . x_b - (|x_a|^2 + |x_b|^2) = -|x_a - x_b|^2``, both computed so that
    ``s(a, b) == s(b, a)`` bit for bit. Each block above the diagonal is computed once and serves
    both its rows and its columns. ``exclude_self`` removes the diagonal. Returns
    (indices, scores), best first.
    """
    block = block or DEFAULT_BLOCK
    n = vectors.shape[0]
    top = RunningTopK(n, k, vectors.device)
    starts = list(range(0, n, block))
    scratch = _Scratch(block, vectors, with_bias=sq_norms is not None)

    def scores_of(s: int, e: int, t: int, u: int) -> Tensor:
        a, b = vectors[s:e], vectors[t:u]
        if sq_norms is None:
            return scratch.product(a, b)
        return scratch.product(a, b, sq_norms[s:e], sq_norms[t:u])

    for s in starts:  # diagonal blocks first: every query gets a finite threshold
        e = min(s + block, n)
        scores = scores_of(s, e, s, e)
        if exclude_self:
            scores.fill_diagonal_(float("-inf"))
        top.merge_block(s, scores, s)
    for i, s in enumerate(starts):
        e = min(s + block, n)
        for t in starts[i + 1 :]:
            u = min(t + block, n)
            scores = scores_of(s, e, t, u)
            rows, cols, values = _row_candidates(scores, top.thresholds(s, e))
            top.merge_sparse(s, rows, cols + t, values)
            rows, cols, values = _column_candidates(scores, top.thresholds(t, u))
            top.merge_sparse(t, cols, rows + s, values)
    return top.result()


def blocked_search(
    left: Tensor, right: Tensor, k: int, exclude: Tensor | None, block: int | None = None
) -> tuple[Tensor, Tensor]:
    """Top-``k`` of ``left @ right.T`` per row by blocks; ``exclude[q]`` (``-1``: none) is dropped.

    For every query block the first gallery block is merged whole; later blocks only
    contribute the scores that reach the running ``k``-th best.
    """
    block = block or DEFAULT_BLOCK
    n_q, n_g = left.shape[0], right.shape[0]
    top = RunningTopK(n_q, k, left.device)
    scratch = _Scratch(block, left)
    for s in range(0, n_q, block):
        e = min(s + block, n_q)
        own = None if exclude is None else exclude[s:e]
        for t in range(0, n_g, block):
            u = min(t + block, n_g)
            scores = scratch.product(left[s:e], right[t:u])
            if own is not None:
                rows = torch.nonzero((own >= t) & (own < u)).flatten()
                scores[rows, own[rows] - t] = float("-inf")
            if t == 0:
                top.merge_block(s, scores, 0)
            else:
                rows, cols, values = _row_candidates(scores, top.thresholds(s, e))
                top.merge_sparse(s, rows, cols + t, values)
    return top.result()


def score_vectors(x: Tensor, metric: str, side: str) -> Tensor:
    """Vectors whose dot product is the ranking score (larger = nearer).

    cosine: unit vectors. Euclidean: ``[x, |x|^2, 1] . [2y, -1, -|y|^2] = -|x - y|^2``.
    """
    if metric == "cosine":
        return F.normalize(x, p=2, dim=1).contiguous()
    sq = (x * x).sum(dim=1, keepdim=True)
    ones = torch.ones_like(sq)
    parts = [x, sq, ones] if side == "left" else [2.0 * x, -ones, -sq]
    return torch.cat(parts, dim=1).contiguous()


def blocked_exact_search(
    queries: Tensor, gallery: Tensor, k: int, metric: str, exclude: Tensor | None, symmetric: bool
) -> tuple[Tensor, Tensor]:
    """Top-``k`` (indices, scores) of ``queries`` in ``gallery``: cosine similarities or
    Euclidean distances, best first, as :func:`deepmetric.evaluation.knn.knn_search` returns
    them. ``symmetric``: the gallery IS the query set and ``exclude`` is None (keep self) or
    the identity (leave-one-out); otherwise ``exclude[q]`` (``-1``: none) is dropped.
    """
    q = queries.to(torch.float32)
    if symmetric:
        if metric == "cosine":
            vectors, sq_norms = score_vectors(q, metric, "left"), None
        else:
            vectors, sq_norms = q.contiguous(), (q * q).sum(dim=1)
        idx, vals = symmetric_search(vectors, k, exclude is not None, sq_norms)
    else:
        left = score_vectors(q, metric, "left")
        right = score_vectors(gallery.to(torch.float32), metric, "right")
        idx, vals = blocked_search(left, right, k, exclude)
    if metric == "euclidean":
        vals = (-vals).clamp_min(0.0).sqrt()
    return idx, vals
