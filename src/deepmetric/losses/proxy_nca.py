r"""ProxyNCA++ loss module (Teh, DeVries, Taylor, ECCV 2020, arXiv 2004.01113)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from deepmetric.errors import ConfigError
from deepmetric.functional.proxy_nca import proxy_nca_pp_logits, proxy_nca_pp_loss
from deepmetric.losses.base import MetricLoss
from deepmetric.losses.proxy_anchor import check_sizes


class ProxyNCAPPLoss(MetricLoss):
    r"""ProxyNCA++: softmax over ALL normalised proxies (the positive one in the denominator), low temperature.

    .. math::

        L = -\frac{1}{N} \sum_i \log
            \frac{e^{-\|\hat x_i - \hat p_{y_i}\|^2 / T}}{\sum_{c} e^{-\|\hat x_i - \hat p_c\|^2 / T}}

    Teh, DeVries, Taylor, "ProxyNCA++: Revisiting and Revitalizing Proxy Neighborhood Component
    Analysis", ECCV 2020 (arXiv 2004.01113).

    Args:
        num_classes: number of training classes C (labels must be in ``[0, C)``).
        embedding_dim: embedding size D.
        temperature: :math:`T` (> 0), default 1/9 (the paper's).

    ``proxies`` (C x D) is an ``nn.Parameter`` (normal, std :math:`1/\sqrt{D}`: rows of norm close
    to 1; only their direction matters). *Fast-moving proxies* (the paper's proxy learning rate,
    far above the network's) are the optimizer's job: set ``optimizer.loss_lr_mult`` in the
    config (e.g. 100-500). ``logits`` are the loss's own logits :math:`-\|\hat x - \hat p_c\|^2/T`
    (argmax = nearest proxy); ``classifier_trained()`` is True. Building without
    ``num_classes`` / ``embedding_dim`` is a :class:`~deepmetric.errors.ConfigError` naming the
    key (the trainer fills both in). PML's ``ProxyNCALoss(softmax_scale=1/T)`` is the same loss
    (squared distances of normalised vectors, all proxies in the softmax).
    """

    def __init__(
        self,
        num_classes: int | None = None,
        embedding_dim: int | None = None,
        temperature: float = 1.0 / 9.0,
    ) -> None:
        super().__init__()
        check_sizes("proxy_nca_pp", num_classes, embedding_dim)  # type: ignore[arg-type]
        if not temperature > 0:
            raise ConfigError(
                f"proxy_nca_pp temperature must be > 0, got {temperature}; use 0.1111 (1/9, the paper's)"
            )
        self.num_classes = int(num_classes)  # type: ignore[arg-type]
        self.embedding_dim = int(embedding_dim)  # type: ignore[arg-type]
        self.temperature = float(temperature)
        self.proxies = nn.Parameter(torch.randn(self.num_classes, self.embedding_dim) / math.sqrt(self.embedding_dim))

    def logits(self, embeddings: Tensor) -> Tensor:
        r"""N x C logits :math:`-\|\hat x_i - \hat p_c\|^2 / T`."""
        return proxy_nca_pp_logits(embeddings, self.proxies, self.temperature)

    def classifier_trained(self) -> bool:
        """Always: the proxies are what the loss trains."""
        return True

    def compute(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        return proxy_nca_pp_loss(embeddings, self.proxies, labels, self.temperature)

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, embedding_dim={self.embedding_dim}, "
            f"temperature={self.temperature:.6g}"
        )


__all__ = ["ProxyNCAPPLoss"]
