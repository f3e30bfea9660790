r"""OSM+CAA: weighted contrastive loss with Online Soft Mining and Class-Aware Attention.

Wang, Hua, Kodirov, Hu, Robertson, "Deep Metric Learning by Online Soft Mining and Class-Aware
Attention", AAAI 2019 (arXiv:1811.01459). Formulas: :mod:`deepmetric.functional.osm_caa`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepmetric.errors import ConfigError, InputError
from deepmetric.functional.masks import label_masks
from deepmetric.functional.osm_caa import (
    CAA_FORMS,
    OSM_FORMS,
    OSMCAAWeights,
    class_aware_attention,
    osm_caa_weights,
    weighted_contrastive_loss,
)
from deepmetric.losses.base import PairLoss


class OSMCAALoss(PairLoss):
    r"""Online Soft Mining + Class-Aware Attention (Wang et al., AAAI 2019, arXiv:1811.01459).

    .. math::

        L = (1-\lambda) L_P + \lambda L_N + \text{ce\_weight} \cdot \mathrm{CE}(W f, y)

    with :math:`L_P = \tfrac12 \sum_{pos} w^+_{ij} d_{ij}^2 / \sum_{pos} w^+_{ij}`,
    :math:`L_N = \tfrac12 \sum_{neg} w^-_{ij} [\alpha - d_{ij}]_+^2 / \sum_{neg} w^-_{ij}` over
    unordered pairs i < j of the batch, Euclidean :math:`d_{ij}`, and *constant* weights
    :math:`w^+_{ij} = s^+_{ij}\,a_{ij}`, :math:`w^-_{ij} = s^-_{ij}\,a_{ij}`:

    * OSM: :math:`s^+_{ij} = \exp(-d_{ij}^2/\sigma^2)` (``osm_form="paper"``) or
      :math:`\exp(-d_{ij}^2/(2\sigma^2))` (``"gaussian"``, official code);
      :math:`s^-_{ij} = [\alpha - d_{ij}]_+`.
    * CAA: the loss owns a classifier ``nn.Linear(embedding_dim, num_classes)``;
      :math:`p_i = \mathrm{softmax}(W f_i + b)_{y_i}`, :math:`a_i = p_i` (``caa_form="prob"``)
      or :math:`\exp(-(p_i - \text{caa\_mean})^2 / (2\,\text{caa\_sigma}^2))` (``"gaussian"``,
      official code: mean 1.0, sigma 0.68); :math:`a_{ij} = \min(a_i, a_j)`.

    Args:
        num_classes: number of training classes; labels must lie in ``[0, num_classes)``.
        embedding_dim: width D of the embeddings (the classifier's input).
        alpha: negative margin :math:`\alpha` (paper 1.2).
        sigma: OSM bandwidth :math:`\sigma` (paper 0.8).
        lam: balance :math:`\lambda` between positive and negative parts (paper 0.5).
        ce_weight: weight of the classifier's cross-entropy (1.0); it trains the classifier that
            CAA reads and also back-propagates into the embeddings. 0 disables it (the
            classifier then stays at its initialisation, so combine with ``use_caa=False``).
        osm_form: ``"paper"`` or ``"gaussian"``.
        caa_form: ``"prob"`` or ``"gaussian"``.
        caa_mean, caa_sigma: parameters of the ``"gaussian"`` CAA map.
        use_osm: False sets :math:`s^\pm = 1` on every pair (CAA-only ablation).
        use_caa: False sets :math:`a_i = 1` (OSM-only ablation). Neither: plain contrastive.

    Empty sets: no positive pair, or no negative inside the margin, makes that part exactly 0
    (finite, zero gradient); the CE term is always defined.

    After every forward, :meth:`last_weights` returns the batch's constant weights
    (attention :math:`a_i`, pair attention, :math:`w^+`, :math:`w^-`) for inspection.
    """

    metric = "euclidean"

    def __init__(
        self,
        num_classes: int,
        embedding_dim: int,
        alpha: float = 1.2,
        sigma: float = 0.8,
        lam: float = 0.5,
        ce_weight: float = 1.0,
        osm_form: str = "paper",
        caa_form: str = "prob",
        caa_mean: float = 1.0,
        caa_sigma: float = 0.68,
        use_osm: bool = True,
        use_caa: bool = True,
    ) -> None:
        super().__init__()
        if int(num_classes) < 2:
            raise ConfigError(f"num_classes must be >= 2 for the CAA classifier, got {num_classes}")
        if int(embedding_dim) < 1:
            raise ConfigError(f"embedding_dim must be >= 1, got {embedding_dim}")
        if not alpha > 0:
            raise ConfigError(f"alpha (margin) must be > 0, got {alpha}; the paper uses 1.2")
        if not sigma > 0:
            raise ConfigError(f"sigma must be > 0, got {sigma}; the paper uses 0.8")
        if not 0.0 <= lam <= 1.0:
            raise ConfigError(f"lam must lie in [0, 1], got {lam}; the paper uses 0.5")
        if ce_weight < 0:
            raise ConfigError(f"ce_weight must be >= 0, got {ce_weight}")
        if osm_form not in OSM_FORMS:
            raise ConfigError(f"osm_form must be one of {OSM_FORMS}, got {osm_form!r}")
        if caa_form not in CAA_FORMS:
            raise ConfigError(f"caa_form must be one of {CAA_FORMS}, got {caa_form!r}")
        if not caa_sigma > 0:
            raise ConfigError(f"caa_sigma must be > 0, got {caa_sigma}")
        self.num_classes = int(num_classes)
        self.embedding_dim = int(embedding_dim)
        self.alpha = float(alpha)
        self.sigma = float(sigma)
        self.lam = float(lam)
        self.ce_weight = float(ce_weight)
        self.osm_form = osm_form
        self.caa_form = caa_form
        self.caa_mean = float(caa_mean)
        self.caa_sigma = float(caa_sigma)
        self.use_osm = bool(use_osm)
        self.use_caa = bool(use_caa)
        self.classifier = nn.Linear(self.embedding_dim, self.num_classes)
        self._last: OSMCAAWeights | None = None

    def _check_labels(self, embeddings: Tensor, labels: Tensor) -> None:
        if embeddings.shape[1] != self.embedding_dim:
            raise InputError(
                f"embeddings have {embeddings.shape[1]} dims but OSMCAALoss was built with "
                f"embedding_dim={self.embedding_dim}; build the loss with the model's embedding size"
            )
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise InputError(
                f"labels must lie in [0, {self.num_classes}) for the CAA classifier, got "
                f"[{int(labels.min())}, {int(labels.max())}]; remap labels to 0..C-1 or raise num_classes"
            )

    def logits(self, embeddings: Tensor) -> Tensor:
        """N x C scores of the CAA classifier."""
        return self.classifier(embeddings)

    def classifier_trained(self) -> bool:
        """True when the classifier's cross-entropy term is on (``ce_weight > 0``)."""
        return self.ce_weight > 0

    def attention(self, embeddings: Tensor, labels: Tensor, logits: Tensor | None = None) -> Tensor:
        """Constant per-sample CAA attention :math:`a_i` (ones when ``use_caa`` is False).

        ``logits`` (the classifier's output on ``embeddings``) are reused when given.
        """
        if not self.use_caa:
            return torch.ones(embeddings.shape[0], dtype=embeddings.dtype, device=embeddings.device)
        if logits is None:
            logits = self.classifier(embeddings.detach())
        return class_aware_attention(logits, labels, self.caa_form, self.caa_mean, self.caa_sigma)

    def compute(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        self._check_labels(embeddings, labels)
        dist = self.pair_matrix(embeddings)
        pos_mask, neg_mask = label_masks(labels)
        logits = self.classifier(embeddings) if (self.use_caa or self.ce_weight > 0) else None
        attention = self.attention(embeddings, labels, logits)  # detached inside
        loss = self.matrix_loss(dist, pos_mask, neg_mask, attention=attention)
        if self.ce_weight > 0 and logits is not None:
            loss = loss + self.ce_weight * F.cross_entropy(logits, labels.long())
        return loss

    def matrix_loss(
        self, matrix: Tensor, pos_mask: Tensor, neg_mask: Tensor, attention: Tensor | None = None
    ) -> Tensor:
        """The metric part on a square distance matrix; ``attention=None`` means a_i = 1.

        Wrappers that call ``matrix_loss`` directly (e.g. symmetrical synthesis) thus get the
        OSM-weighted contrastive loss without attention and without the CE term.
        """
        weights = osm_caa_weights(
            matrix, pos_mask, neg_mask, attention, self.alpha, self.sigma, self.osm_form, self.use_osm
        )
        self._last = weights
        return weighted_contrastive_loss(
            matrix, pos_mask, neg_mask, weights.pos_weights, weights.neg_weights, self.alpha, self.lam
        )

    def last_weights(self) -> OSMCAAWeights:
        """The constant weights of the last batch: ``attention`` (N,), ``pair_attention``,
        ``pos_weights`` and ``neg_weights`` (N x N, symmetric, zero off their pairs)."""
        if self._last is None:
            raise InputError("no batch seen yet; call the loss on a batch before last_weights()")
        return self._last

    def extra_repr(self) -> str:
        return (
            f"alpha={self.alpha}, sigma={self.sigma}, lam={self.lam}, ce_weight={self.ce_weight}, "
            f"osm_form={self.osm_form!r}, caa_form={self.caa_form!r}, use_osm={self.use_osm}, "
            f"use_caa={self.use_caa}"
        )
