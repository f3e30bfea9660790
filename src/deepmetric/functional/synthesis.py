r"""Symmetrical synthesis of hard negatives, as pure functions of a batch of embeddings.

Gu and Ko, "Symmetrical Synthesis for Deep Metric Learning", AAAI 2020 (arXiv 2001.11658).

**Synthesis.** For a positive pair :math:`(x_k, x_l)` each point is reflected about the axis
through the origin and the other point:

.. math::

    \mathrm{proj}_l(x_k) = \frac{x_k \cdot x_l}{\|x_l\|^2}\, x_l, \qquad
    x'_k = \beta\,\big(\alpha\, \mathrm{proj}_l(x_k) - x_k\big), \qquad
    x'_l = \beta\,\big(\alpha\, \mathrm{proj}_k(x_l) - x_l\big).

With :math:`\alpha = 2, \beta = 1` (the defaults) this is the mirror image of :math:`x_k` in the
line spanned by :math:`x_l`: it keeps :math:`\|x_k\|` and the angle to the axis, and reflecting
twice returns the point. The synthetic points are differentiable functions of the embeddings.

**Pairs in a P x K batch.** Every sample :math:`j` forms the positive pair
:math:`(j, \nu(j))` with :math:`\nu(j)` = the *next* sample of its class in batch order,
wrapping around to the first one (:func:`next_in_class`). The pair's four candidate points are

.. math::

    C_j = \{x_j,\ x_{\nu(j)},\ x'_j = \text{reflect}(x_j \text{ about } x_{\nu(j)}),\
            x''_j = \text{reflect}(x_{\nu(j)} \text{ about } x_j)\}.

For K = 2 the pairs of the two samples :math:`k, l` of a class are the same unordered pair, so
both columns see exactly the paper's four points :math:`\{x_k, x_l, x'_k, x'_l\}`. A sample
alone in its class pairs with itself; with the default :math:`\alpha=2, \beta=1` its
reflections are itself, so it is left unchanged.

**Hard negative mining.** In the N x N pair matrix :math:`M` of the base loss (distances or
similarities of the real batch), every *negative* entry :math:`(i, j)`, :math:`y_i \ne y_j`,
is replaced by the hardest candidate of column :math:`j`'s pair as seen from anchor :math:`i`:

.. math::

    \tilde M_{ij} = \operatorname{hardest}_{c \in C_j} m(x_i, c)
    \quad (\max \text{ for similarities}, \min \text{ for distances}),

and every other entry (positives, the diagonal) keeps its real value. The number of negative
entries is unchanged, so the base loss's normalisation is unchanged. Memory is O(N^2): three
N x N matrices (anchors vs real points, vs :math:`x'`, vs :math:`x''`) and column gathers; no
N x N x 4 x D tensor is ever built.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

#: ``pair_fn(x, y)`` -> the N x M pair matrix of ``x`` against ``y`` (``y=None``: against itself)
PairFn = Callable[[Tensor, "Tensor | None"], Tensor]


def project(points: Tensor, axes: Tensor, eps: float = 1e-12) -> Tensor:
    r"""Row-wise projection :math:`\mathrm{proj}_a(x) = \frac{x \cdot a}{\|a\|^2} a` of
    ``points`` (N x D) onto the lines through the origin spanned by ``axes`` (N x D).

    A zero axis (:math:`\|a\|^2 \le` ``eps``) projects to the zero vector instead of NaN.
    """
    dot = (points * axes).sum(dim=1, keepdim=True)
    sq_norm = (axes * axes).sum(dim=1, keepdim=True)
    return axes * (dot / sq_norm.clamp_min(eps))


def reflect(
    points: Tensor, axes: Tensor, alpha: float = 2.0, beta: float = 1.0, eps: float = 1e-12
) -> Tensor:
    r"""The symmetrical point :math:`x' = \beta(\alpha\,\mathrm{proj}_a(x) - x)` of every row of
    ``points`` about the matching row of ``axes`` (both N x D).

    With ``alpha=2, beta=1`` this is the reflection in the line spanned by the axis: it keeps
    the norm of ``x`` and its angle to the axis, and is an involution.
    """
    return beta * (alpha * project(points, axes, eps) - points)


def next_in_class(labels: Tensor) -> Tensor:
    """For every sample, the index of the next sample with the same label in batch order,
    wrapping around to the first one of that label; a sample alone in its class maps to itself.

    Example: labels ``[0, 1, 0, 1, 0]`` give ``[2, 3, 4, 1, 0]``.
    """
    n = labels.numel()
    device = labels.device
    if n == 0:
        return torch.empty(0, dtype=torch.long, device=device)
    sorted_labels, order = torch.sort(labels, stable=True)
    positions = torch.arange(n, device=device)
    is_first = torch.ones(n, dtype=torch.bool, device=device)
    is_first[1:] = sorted_labels[1:] != sorted_labels[:-1]
    is_last = torch.ones(n, dtype=torch.bool, device=device)
    is_last[:-1] = sorted_labels[1:] != sorted_labels[:-1]
    group_start = torch.where(is_first, positions, torch.zeros_like(positions)).cummax(dim=0).values
    next_position = torch.where(is_last, group_start, positions + 1)
    partner = torch.empty_like(order)
    partner[order] = order[next_position]
    return partner


def synthesize_pairs(
    embeddings: Tensor, partner: Tensor, alpha: float = 2.0, beta: float = 1.0
) -> tuple[Tensor, Tensor]:
    r"""The two synthetic points of every pair :math:`(j, \nu(j))`, ``partner[j]`` :math:`=\nu(j)`.

    Returns ``(first, second)``, both N x D: ``first[j]`` reflects :math:`x_j` about
    :math:`x_{\nu(j)}` and ``second[j]`` reflects :math:`x_{\nu(j)}` about :math:`x_j`.
    """
    other = embeddings[partner]
    return reflect(embeddings, other, alpha, beta), reflect(other, embeddings, alpha, beta)


def hardest(matrices: Sequence[Tensor], higher_is_closer: bool) -> Tensor:
    """Element-wise hardest (max for similarities, min for distances) of equal-shaped matrices."""
    pick = torch.maximum if higher_is_closer else torch.minimum
    out = matrices[0]
    for m in matrices[1:]:
        out = pick(out, m)
    return out


def hardest_candidate_matrix(
    embeddings: Tensor,
    partner: Tensor,
    pair_fn: PairFn,
    higher_is_closer: bool,
    alpha: float = 2.0,
    beta: float = 1.0,
    real: Tensor | None = None,
) -> Tensor:
    r"""N x N matrix :math:`H_{ij} = \operatorname{hardest}_{c \in C_j} m(x_i, c)` over the four
    candidate points :math:`C_j` of the pair :math:`(j, \nu(j))` (see the module docstring).

    Args:
        embeddings: N x D batch.
        partner: N indices :math:`\nu(j)` (e.g. from :func:`next_in_class`).
        pair_fn: the base loss's pair matrix, ``pair_fn(x, y)`` -> N x M.
        higher_is_closer: True if ``pair_fn`` gives similarities (take the max), False for
            distances (take the min).
        alpha, beta: synthesis knobs of :func:`reflect`.
        real: the plain pair matrix ``pair_fn(embeddings, None)`` if already computed.
    """
    first, second = synthesize_pairs(embeddings, partner, alpha, beta)
    if real is None:
        real = pair_fn(embeddings, None)
    return hardest(
        [real, real[:, partner], pair_fn(embeddings, first), pair_fn(embeddings, second)],
        higher_is_closer,
    )


def symmetrical_synthesis_matrix(
    embeddings: Tensor,
    labels: Tensor,
    pair_fn: PairFn,
    higher_is_closer: bool,
    alpha: float = 2.0,
    beta: float = 1.0,
    real: Tensor | None = None,
    neg_mask: Tensor | None = None,
) -> Tensor:
    r"""The base loss's N x N pair matrix with every negative entry replaced by the hardest of
    the four candidate points of its column's pair (:math:`\tilde M` of the module docstring).

    ``real`` (the plain pair matrix of the batch) and ``neg_mask`` may be passed when the
    caller already has them; positive and diagonal entries are returned unchanged from ``real``.
    """
    if real is None:
        real = pair_fn(embeddings, None)
    if neg_mask is None:
        neg_mask = labels.view(-1, 1) != labels.view(1, -1)
    hard = hardest_candidate_matrix(
        embeddings, next_in_class(labels), pair_fn, higher_is_closer, alpha, beta, real=real
    )
    return torch.where(neg_mask, hard, real)
