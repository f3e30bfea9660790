r"""Ranked List Loss (RLL) as a pure function of a distance matrix and label masks.

Wang, Hua, Kodirov, Hu, Garnier, Robertson, "Ranked List Loss for Deep Metric Learning",
CVPR 2019 (arXiv:1903.03238); TPAMI extension by Wang, Hua, Kodirov, Robertson.

Every row i of the distance matrix is a query; its positives should fall inside a hypersphere of
radius :math:`\alpha - m`, its negatives beyond :math:`\alpha`. With Euclidean :math:`d_{ij}`:

* non-trivial sets: :math:`P^*_i = \{j \in pos(i) : d_{ij} > \alpha - m\}`,
  :math:`N^*_i = \{j \in neg(i) : d_{ij} < \alpha\}`;
* pair losses: :math:`L_m = d_{ij} - (\alpha - m)` on :math:`P^*_i`,
  :math:`L_m = \alpha - d_{ij}` on :math:`N^*_i`;
* constant weights: :math:`w_{ij} = \exp(T_n(\alpha - d_{ij}))` on :math:`N^*_i`,
  :math:`w_{ij} = \exp(T_p(d_{ij} - (\alpha - m)))` on :math:`P^*_i` (:math:`T_p = 0`: plain mean);
* :math:`L_P(i) = \sum_{P^*_i} w L_m / \sum_{P^*_i} w`,
  :math:`L_N(i) = \sum_{N^*_i} w L_m / \sum_{N^*_i} w`;
* ``"cvpr"``: :math:`L(i) = L_P(i) + \lambda L_N(i)`;
  ``"tpami"``: :math:`L(i) = (1-\lambda) L_P(i) + \lambda L_N(i)`;
* batch loss: the mean of :math:`L(i)` over ALL queries (rows).

Empty sets: a query whose :math:`P^*_i` (or :math:`N^*_i`) is empty contributes 0 for that part
and still counts in the mean over queries. The weights are normalised per query as a masked
softmax of :math:`T(\cdot)`, which equals :math:`w / \sum w` exactly and cannot overflow for large
temperatures.

Simpler form: with :math:`m = 0` and :math:`T_n = T_p = 0` every weight is uniform, so
:math:`L(i) = c_P\,\mathrm{mean}_{j \in P^*_i}(d_{ij} - \alpha) +
\lambda\,\mathrm{mean}_{j \in N^*_i}(\alpha - d_{ij})` (:math:`c_P = 1` for cvpr,
:math:`1-\lambda` for tpami), a per-query mean hinge around a single boundary :math:`\alpha`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from deepmetric.errors import ConfigError
from deepmetric.functional.validation import check_pair_inputs

VARIANTS = ("cvpr", "tpami")


class RankedListWeights(NamedTuple):
    """Per-query normalised constant weights (rows sum to 1 over a non-empty set, else 0)."""

    pos_set: Tensor  #: boolean N x M, the non-trivial positives P*_i
    neg_set: Tensor  #: boolean N x M, the non-trivial negatives N*_i
    pos_weights: Tensor  #: w_ij / sum_{P*_i} w on P*_i, else 0
    neg_weights: Tensor  #: w_ij / sum_{N*_i} w on N*_i, else 0


def masked_row_softmax(logits: Tensor, mask: Tensor) -> Tensor:
    """Row-wise softmax of ``logits`` restricted to ``mask``; rows with an empty mask are all 0."""
    neg_inf = torch.finfo(logits.dtype).min
    z = logits.masked_fill(~mask, neg_inf)
    z = z - z.max(dim=1, keepdim=True).values.clamp_min(neg_inf / 2)
    e = torch.exp(z).masked_fill(~mask, 0.0)
    den = e.sum(dim=1, keepdim=True)
    return e / den.clamp_min(torch.finfo(logits.dtype).tiny)


def check_ranked_list_params(alpha: float, margin: float, t_n: float, t_p: float, lam: float, variant: str) -> None:
    """Raise :class:`ConfigError` for knobs outside their meaningful range."""
    if variant not in VARIANTS:
        raise ConfigError(f"variant must be 'cvpr' or 'tpami', got {variant!r}")
    if not alpha > 0:
        raise ConfigError(f"alpha (negative boundary) must be > 0, got {alpha}; the paper uses 1.2")
    if not 0 <= margin <= alpha:
        raise ConfigError(f"margin must lie in [0, alpha={alpha}], got {margin}; the paper uses 0.4")
    if t_n < 0 or t_p < 0:
        raise ConfigError(f"temperatures t_n and t_p must be >= 0, got t_n={t_n}, t_p={t_p}")
    if not 0 <= lam <= 1 and variant == "tpami":
        raise ConfigError(f"lam must lie in [0, 1] for the tpami variant, got {lam}")
    if lam < 0:
        raise ConfigError(f"lam must be >= 0, got {lam}")


def ranked_list_weights(
    dist: Tensor,
    pos_mask: Tensor,
    neg_mask: Tensor,
    alpha: float = 1.2,
    margin: float = 0.4,
    t_n: float = 10.0,
    t_p: float = 0.0,
) -> RankedListWeights:
    """Non-trivial sets and normalised constant weights for every query (row) of ``dist``."""
    check_pair_inputs(dist, pos_mask, neg_mask, name="dist")
    with torch.no_grad():
        d = dist.detach()
        pos_set = pos_mask & (d > alpha - margin)
        neg_set = neg_mask & (d < alpha)
        pos_w = masked_row_softmax(t_p * (d - (alpha - margin)), pos_set)
        neg_w = masked_row_softmax(t_n * (alpha - d), neg_set)
    return RankedListWeights(pos_set, neg_set, pos_w, neg_w)


def ranked_list_loss(
    dist: Tensor,
    pos_mask: Tensor,
    neg_mask: Tensor,
    alpha: float = 1.2,
    margin: float = 0.4,
    t_n: float = 10.0,
    t_p: float = 0.0,
    lam: float = 0.5,
    variant: str = "cvpr",
) -> Tensor:
    """The ranked list loss (module docstring) of Euclidean distances ``dist`` (N x M).

    Rows are queries; ``pos_mask``/``neg_mask`` (boolean N x M) mark their positives and
    negatives (the query itself must be in neither). Returns the mean over all N queries.
    """
    check_ranked_list_params(alpha, margin, t_n, t_p, lam, variant)
    w = ranked_list_weights(dist, pos_mask, neg_mask, alpha, margin, t_n, t_p)
    loss_p = (w.pos_weights * (dist - (alpha - margin))).sum(dim=1)
    loss_n = (w.neg_weights * (alpha - dist)).sum(dim=1)
    c_p = 1.0 if variant == "cvpr" else 1.0 - lam
    if dist.shape[0] == 0:
        return dist.sum() * 0.0
    return (c_p * loss_p + lam * loss_n).mean()
