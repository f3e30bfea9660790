r"""Online Soft Mining (OSM) and Class-Aware Attention (CAA) as pure functions.

Wang, Hua, Kodirov, Hu, Robertson, "Deep Metric Learning by Online Soft Mining and Class-Aware
Attention", AAAI 2019 (arXiv:1811.01459).

Every pair of a mini-batch gets a continuous, *constant* weight (computed without gradient):

* OSM positive weight  :math:`s^+_{ij} = \exp(-d_{ij}^2 / \sigma^2)` (``osm_form="paper"``) or
  :math:`\exp(-d_{ij}^2 / (2\sigma^2))` (``osm_form="gaussian"``, the official Caffe code);
* OSM negative weight  :math:`s^-_{ij} = [\alpha - d_{ij}]_+`;
* CAA sample attention :math:`a_i = p_i = \mathrm{softmax}(W f_i)_{y_i}` (``caa_form="prob"``) or
  :math:`a_i = \exp(-(p_i - \mu)^2 / (2 \sigma_a^2))` with :math:`\mu = 1, \sigma_a = 0.68`
  (``caa_form="gaussian"``, the official code); pair attention :math:`a_{ij} = \min(a_i, a_j)`;
* pair weights :math:`w^\pm_{ij} = s^\pm_{ij} a_{ij}`.

The weighted contrastive loss, over unordered pairs :math:`i < j` (equivalently over both
orders of every pair, which gives the same weighted means for a symmetric distance matrix):

.. math::

    L_P = \frac{1}{2} \frac{\sum_{pos} w^+_{ij} d_{ij}^2}{\sum_{pos} w^+_{ij}}, \quad
    L_N = \frac{1}{2} \frac{\sum_{neg} w^-_{ij} [\alpha - d_{ij}]_+^2}{\sum_{neg} w^-_{ij}}, \quad
    L = (1 - \lambda) L_P + \lambda L_N .

Empty sets: when a weight sum is zero (no positive pair, no negative inside the margin, every
attention zero) that part is exactly 0, with a zero gradient still connected to the graph.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from deepmetric.errors import ConfigError, InputError
from deepmetric.functional.contrastive import weighted_contrastive

OSM_FORMS = ("paper", "gaussian")
CAA_FORMS = ("prob", "gaussian")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


def osm_positive_weights(dist: Tensor, sigma: float = 0.8, form: str = "paper") -> Tensor:
    r"""OSM positive weights, elementwise: :math:`\exp(-d^2/\sigma^2)` ("paper") or
    :math:`\exp(-d^2/(2\sigma^2))` ("gaussian"). Detached (constant)."""
    _check_choice("osm_form", form, OSM_FORMS)
    if not sigma > 0:
        raise ConfigError(f"sigma (OSM bandwidth) must be > 0, got {sigma}; the paper uses 0.8")
    scale = sigma**2 if form == "paper" else 2.0 * sigma**2
    with torch.no_grad():
        return torch.exp(-dist.detach() ** 2 / scale)


def osm_negative_weights(dist: Tensor, alpha: float = 1.2) -> Tensor:
    r"""OSM negative weights, elementwise :math:`[\alpha - d]_+` (harder negatives weigh more;
    negatives outside the margin weigh 0). Detached (constant)."""
    with torch.no_grad():
        return (alpha - dist.detach()).clamp_min(0.0)


def class_aware_attention(
    logits: Tensor,
    labels: Tensor,
    form: str = "prob",
    mean: float = 1.0,
    sigma: float = 0.68,
) -> Tensor:
    r"""Per-sample attention from classifier ``logits`` (N x C) and ``labels`` (N,) in [0, C).

    :math:`p_i = \mathrm{softmax}(\text{logits}_i)_{y_i}`; ``form="prob"`` returns :math:`p_i`,
    ``form="gaussian"`` returns :math:`\exp(-(p_i - \text{mean})^2 / (2\,\text{sigma}^2))`.
    Detached (constant): no gradient reaches the classifier through the attention.
    """
    _check_choice("caa_form", form, CAA_FORMS)
    if not sigma > 0:
        raise ConfigError(f"caa_sigma must be > 0, got {sigma}; the official code uses 0.68")
    with torch.no_grad():
        probs = torch.softmax(logits.detach(), dim=1)
        p = probs.gather(1, labels.view(-1, 1).long()).squeeze(1)
        if form == "prob":
            return p
        return torch.exp(-((p - mean) ** 2) / (2.0 * sigma**2))


def pair_attention(attention: Tensor, ref_attention: Tensor | None = None) -> Tensor:
    r"""Pair attention :math:`a_{ij} = \min(a_i, a_j)` as an N x M matrix (detached)."""
    ref = attention if ref_attention is None else ref_attention
    with torch.no_grad():
        return torch.minimum(attention.detach().view(-1, 1), ref.detach().view(1, -1))


class OSMCAAWeights(NamedTuple):
    """Constant weights of one batch (all detached). Pair matrices are zero outside the
    positive / negative pairs they apply to and symmetric for a symmetric distance matrix."""

    attention: Tensor  #: per-sample attention a_i, shape (N,)
    pair_attention: Tensor  #: min(a_i, a_j), N x N
    pos_weights: Tensor  #: w+_ij = s+_ij a_ij on positive pairs, else 0
    neg_weights: Tensor  #: w-_ij = s-_ij a_ij on negative pairs, else 0


def osm_caa_weights(
    dist: Tensor,
    pos_mask: Tensor,
    neg_mask: Tensor,
    attention: Tensor | None = None,
    alpha: float = 1.2,
    sigma: float = 0.8,
    osm_form: str = "paper",
    use_osm: bool = True,
) -> OSMCAAWeights:
    """All constant weights of the loss for a square distance matrix ``dist`` (N x N).

    ``attention`` (N,) is the CAA attention; ``None`` means 1 for every sample (no CAA).
    ``use_osm=False`` sets :math:`s^\\pm = 1` on every pair (plain contrastive weighting).
    """
    if dist.dim() != 2 or dist.shape[0] != dist.shape[1]:
        raise InputError(
            f"OSM+CAA needs the square distance matrix of a batch against itself, got shape "
            f"{tuple(dist.shape)}; pass euclidean_distance_matrix(embeddings)"
        )
    n = dist.shape[0]
    if attention is None:
        attention = torch.ones(n, dtype=dist.dtype, device=dist.device)
    if attention.shape != (n,):
        raise InputError(f"attention must have one value per sample, shape ({n},), got {tuple(attention.shape)}")
    a_ij = pair_attention(attention.to(dist.dtype))
    with torch.no_grad():
        if use_osm:
            s_pos = osm_positive_weights(dist, sigma, osm_form)
            s_neg = osm_negative_weights(dist, alpha)
        else:
            s_pos = torch.ones_like(dist)
            s_neg = torch.ones_like(dist)
        w_pos = (s_pos * a_ij).masked_fill(~pos_mask, 0.0)
        w_neg = (s_neg * a_ij).masked_fill(~neg_mask, 0.0)
    return OSMCAAWeights(attention.detach(), a_ij, w_pos, w_neg)


def weighted_contrastive_loss(
    dist: Tensor,
    pos_mask: Tensor,
    neg_mask: Tensor,
    pos_weights: Tensor,
    neg_weights: Tensor,
    alpha: float = 1.2,
    lam: float = 0.5,
) -> Tensor:
    r""":math:`(1-\lambda) L_P + \lambda L_N` with constant pair weights (see module docstring).

    Built on :func:`deepmetric.functional.contrastive.weighted_contrastive` (squared terms,
    margins 0 and :math:`\alpha`, weighted means). The masks of a batch against itself hold
    both (i, j) and (j, i); for a symmetric ``dist`` the weighted means are then exactly the
    means over unordered pairs i < j, and an asymmetric matrix (after symmetrical synthesis) has
    both directions of each pair averaged. Gradients flow through ``dist`` only.
    """
    loss_p, loss_n = weighted_contrastive(
        dist,
        pos_mask,
        neg_mask,
        pos_weights.detach(),
        neg_weights.detach(),
        pos_margin=0.0,
        neg_margin=alpha,
        squared=True,
        reduction="mean",
    )
    return (1.0 - lam) * 0.5 * loss_p + lam * 0.5 * loss_n


def osm_caa_loss(
    dist: Tensor,
    pos_mask: Tensor,
    neg_mask: Tensor,
    attention: Tensor | None = None,
    alpha: float = 1.2,
    sigma: float = 0.8,
    lam: float = 0.5,
    osm_form: str = "paper",
    use_osm: bool = True,
) -> Tensor:
    """The metric part of OSM+CAA (no cross-entropy) on a square distance matrix.

    ``attention=None`` gives OSM alone; ``use_osm=False`` with ``attention=None`` gives the plain
    contrastive loss :math:`(1-\\lambda)\\,\\mathrm{mean}_{pos} d^2/2 +
    \\lambda\\,\\mathrm{mean}_{neg} [\\alpha-d]_+^2/2` over unordered pairs.
    """
    w = osm_caa_weights(dist, pos_mask, neg_mask, attention, alpha, sigma, osm_form, use_osm)
    return weighted_contrastive_loss(dist, pos_mask, neg_mask, w.pos_weights, w.neg_weights, alpha, lam)
