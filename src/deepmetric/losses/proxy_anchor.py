r"""Proxy-Anchor loss module (Kim et al., CVPR 2020, arXiv 2003.13911)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from deepmetric.errors import ConfigError
from deepmetric.functional.distances import cosine_similarity_matrix
from deepmetric.functional.proxy_anchor import proxy_anchor_loss
from deepmetric.losses.base import MetricLoss


def check_sizes(loss_name: str, num_classes: int, embedding_dim: int) -> None:
    """Raise :class:`ConfigError` unless both sizes are positive integers."""
    for name, value in (("num_classes", num_classes), ("embedding_dim", embedding_dim)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(
                f"{loss_name} needs {name} as a positive integer, got {value!r}; pass the number "
                "of training classes and the embedding size (the trainer fills both in)"
            )


class ProxyAnchorLoss(MetricLoss):
    r"""Proxy-Anchor loss with one learnable proxy per class.

    .. math::

        L = \frac{1}{|P^+|} \sum_{p \in P^+} \log\Big(1 + \sum_{x \in X_p^+}
                e^{-\alpha (s(x, p) - \delta)}\Big)
          + \frac{1}{|P|} \sum_{p \in P} \log\Big(1 + \sum_{x \in X_p^-}
                e^{\alpha (s(x, p) + \delta)}\Big)

    with :math:`s` the cosine similarity, :math:`P^+` the proxies with positives in the batch.
    Kim, Kim, Cho, Kwak, "Proxy Anchor Loss for Deep Metric Learning", CVPR 2020
    (arXiv 2003.13911).

    Args:
        num_classes: number of training classes C (labels must be in ``[0, C)``).
        embedding_dim: embedding size D.
        margin: :math:`\delta`, default 0.1.
        alpha: scale :math:`\alpha`, default 32.

    ``proxies`` (C x D) is an ``nn.Parameter``, Kaiming-normal initialised (fan-out), as in the
    paper's code; the paper trains it with a learning rate 100x the network's. Empty sets: a
    proxy without positives in the batch is left out of the positive term; a proxy without
    negatives adds 0.
    """

    def __init__(
        self, num_classes: int, embedding_dim: int, margin: float = 0.1, alpha: float = 32.0
    ) -> None:
        super().__init__()
        check_sizes("proxy_anchor", num_classes, embedding_dim)
        if alpha <= 0:
            raise ConfigError(f"proxy_anchor alpha must be > 0, got {alpha}; use 32 (the paper's)")
        self.num_classes = num_classes
        self.embedding_dim = embedding_dim
        self.margin = float(margin)
        self.alpha = float(alpha)
        self.proxies = nn.Parameter(torch.empty(num_classes, embedding_dim))
        nn.init.kaiming_normal_(self.proxies, mode="fan_out")

    def similarities(self, embeddings: Tensor) -> Tensor:
        """N x C cosine similarities between embeddings and the class proxies."""
        return cosine_similarity_matrix(embeddings, self.proxies)

    def logits(self, embeddings: Tensor) -> Tensor:
        """Class scores for prediction: the cosine similarity to each proxy."""
        return self.similarities(embeddings)

    def classifier_trained(self) -> bool:
        """Always: the proxies are what the loss trains."""
        return True

    def compute(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        return proxy_anchor_loss(
            self.similarities(embeddings), labels, margin=self.margin, alpha=self.alpha
        )

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, embedding_dim={self.embedding_dim}, "
            f"margin={self.margin}, alpha={self.alpha}"
        )
