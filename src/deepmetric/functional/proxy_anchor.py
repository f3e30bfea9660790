r"""Proxy-Anchor loss as a pure function of the sample-to-proxy similarity matrix.

Kim, Kim, Cho, Kwak, "Proxy Anchor Loss for Deep Metric Learning", CVPR 2020
(arXiv 2003.13911).

With :math:`s(x, p)` the cosine similarity of sample :math:`x` and proxy :math:`p`,
:math:`X_p^+` the samples of proxy :math:`p`'s class and :math:`X_p^-` the others,
:math:`P` all proxies and :math:`P^+` the proxies with at least one positive in the batch:

.. math::

    L = \frac{1}{|P^+|} \sum_{p \in P^+} \log\Big(1 + \sum_{x \in X_p^+}
            e^{-\alpha (s(x, p) - \delta)}\Big)
      + \frac{1}{|P|} \sum_{p \in P} \log\Big(1 + \sum_{x \in X_p^-}
            e^{\alpha (s(x, p) + \delta)}\Big)
"""

from __future__ import annotations

import torch
from torch import Tensor

from deepmetric.functional.classification import check_class_labels
from deepmetric.functional.multi_similarity import masked_log1p_sum_exp


def proxy_anchor_loss(
    sim: Tensor, labels: Tensor, margin: float = 0.1, alpha: float = 32.0
) -> Tensor:
    r"""Proxy-Anchor loss of an N x C similarity matrix (see the module docstring).

    Args:
        sim: N x C similarities between the N samples and the C class proxies.
        labels: N class indices in ``[0, C)``; proxy ``c`` is the proxy of class ``c``.
        margin: :math:`\delta` (paper: 0.1).
        alpha: scale :math:`\alpha` (paper: 32).

    Returns:
        The scalar loss. The positive term averages over the proxies having positives in the
        batch; the negative term over all C proxies. A proxy with no negative sample (one class
        in the batch) adds :math:`\log 1 = 0`. Every term is finite; an empty batch gives 0.
    """
    num_classes = sim.shape[1]
    check_class_labels(labels, num_classes)
    if sim.shape[0] == 0 or num_classes == 0:
        return sim.sum() * 0.0
    pos_mask = labels.view(-1, 1) == torch.arange(num_classes, device=sim.device).view(1, -1)
    pos_term = masked_log1p_sum_exp(-alpha * (sim - margin), pos_mask, dim=0)
    neg_term = masked_log1p_sum_exp(alpha * (sim + margin), ~pos_mask, dim=0)
    with_pos = pos_mask.any(dim=0)
    num_with_pos = with_pos.sum().clamp_min(1)
    pos_loss = (pos_term * with_pos).sum() / num_with_pos
    return pos_loss + neg_term.sum() / max(num_classes, 1)
