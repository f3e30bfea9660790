r"""ProxyNCA++ as a pure function of embeddings and class proxies.

Teh, DeVries, Taylor, "ProxyNCA++: Revisiting and Revitalizing Proxy Neighborhood Component
Analysis", ECCV 2020 (arXiv 2004.01113), Eq. 4 with the paper's low temperature. With
:math:`\hat x_i` the normalised embedding, :math:`\hat p_c` the normalised proxy of class
:math:`c`, :math:`d(u, v) = \|u - v\|_2^2` and temperature :math:`T`:

.. math::

    L = -\frac{1}{N} \sum_i \log
        \frac{e^{-d(\hat x_i, \hat p_{y_i}) / T}}{\sum_{c=1}^{C} e^{-d(\hat x_i, \hat p_c) / T}}

The denominator runs over ALL proxies, the positive one included (the ProxyNCA++ "proxy
assignment probability"; the original ProxyNCA of Movshovitz-Attias et al. 2017 left it out).
For unit vectors :math:`d = 2 - 2\cos`, so the logits are :math:`(2\cos\theta_{ic} - 2) / T`: a
cross-entropy over cosines with scale :math:`2/T` (the constant :math:`-2/T` cancels).
The paper's :math:`T = 1/9`.

A zero embedding (or proxy) has cosine 0 with everything, so
its logits are all :math:`-2/T` (a uniform softmax) and its gradient is 0. Computed in float32 (float64 input stays
float64) with autocast off. Labels must be in ``[0, C)``; an empty batch gives 0.

The paper's other ingredients are outside the loss: *fast-moving proxies* are a larger learning
rate for the proxies (``optimizer.loss_lr_mult`` in a config; the paper uses a proxy learning
rate hundreds of times the network's), and global max pooling belongs to the model.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from deepmetric.functional.classification import check_class_labels
from deepmetric.functional.margin_softmax import normalized_cosines


def proxy_nca_pp_logits(embeddings: Tensor, proxies: Tensor, temperature: float = 1.0 / 9.0) -> Tensor:
    r"""N x C logits :math:`-\|\hat x_i - \hat p_c\|^2 / T = (2 \cos\theta_{ic} - 2) / T`."""
    return (normalized_cosines(embeddings, proxies) * 2.0 - 2.0) / temperature


def proxy_nca_pp_loss(
    embeddings: Tensor, proxies: Tensor, labels: Tensor, temperature: float = 1.0 / 9.0
) -> Tensor:
    r"""ProxyNCA++ loss (module docstring).

    Args:
        embeddings: N x D embeddings (normalised inside).
        proxies: C x D class proxies (normalised inside).
        labels: N class indices in ``[0, C)``.
        temperature: :math:`T` (> 0), paper 1/9.

    Returns:
        The mean over the batch of the cross-entropy over all C proxies; 0 for an empty batch.
    """
    check_class_labels(labels, proxies.shape[0])
    logits = proxy_nca_pp_logits(embeddings, proxies, temperature)
    if labels.numel() == 0:
        return logits.sum() * 0.0
    return F.cross_entropy(logits, labels.long())


__all__ = ["proxy_nca_pp_logits", "proxy_nca_pp_loss"]
