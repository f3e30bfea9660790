r"""Angular loss, N-pair form (Wang, Zhou, Wen, Liu, Lin, "Deep Metric Learning with Angular
Loss", ICCV 2017, arXiv 1708.01682), from one similarity matrix in O(N^2) memory.

For an anchor-positive pair (a, p) and a negative n, with unit-length embeddings and
:math:`S_{ij} = x_i^\top x_j`:

.. math::

    f_{apn} = 4 \tan^2\alpha\, (S_{an} + S_{pn}) - 2 (1 + \tan^2\alpha)\, S_{ap},
    \qquad
    L = \frac{1}{|P|} \sum_{(a,p) \in P} \log\Big(1 + \sum_{n \in N_a} e^{f_{apn}}\Big).

Every ordered positive pair (a, p) is an anchor-positive pair; its negatives :math:`N_a` are the
True entries of row a of ``neg_mask`` (samples of other classes than a, hence than p).

**O(N^2).** With :math:`c = 4\tan^2\alpha`,
:math:`\sum_{n \in N_a} e^{c S_{an} + c S_{pn}} = \big[(E^{neg} E^\top)\big]_{ap}` where
:math:`E^{neg}_{an} = [n \in N_a]\, e^{c S_{an} - \mu_a}` and :math:`E_{pn} = e^{c S_{pn} - \nu_p}`,
one matrix product instead of an N x N x N tensor. The row shifts :math:`\mu_a` (the largest
scaled negative entry of row a) and :math:`\nu_p` (the largest entry of row p) keep every
exponential :math:`\le 1`; they are added back outside the log, so nothing overflows. The largest term of a
pair is at least :math:`e^{-4c \max|S|}`; for cosine similarities (:math:`|S| \le 1`) that is
far above float32's underflow while :math:`4c \le 60` (alpha up to about 62 degrees), and the
product is computed in float64 beyond that, so the result has full precision. Entries far
outside [-1, 1] with a large alpha could lose precision in float32 (never NaN).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from deepmetric.errors import ConfigError
from deepmetric.functional.contrastive import check_pair_inputs, reduce_masked


#: largest alpha (degrees) for which the float64 product keeps full precision (4c <= 600)
MAX_ALPHA_DEGREES: float = 80.0


def check_alpha(alpha_degrees: float) -> None:
    """Raise :class:`ConfigError` unless 0 < ``alpha_degrees`` <= :data:`MAX_ALPHA_DEGREES`."""
    if not 0.0 < alpha_degrees <= MAX_ALPHA_DEGREES:
        raise ConfigError(
            f"alpha_degrees must lie in (0, {MAX_ALPHA_DEGREES:g}], got {alpha_degrees}; the paper "
            "uses 36-55 degrees (beyond 80 the exponents exceed even float64's range)"
        )


def angular_loss(sim: Tensor, pos_mask: Tensor, neg_mask: Tensor, alpha_degrees: float = 40.0) -> Tensor:
    r"""Angular loss (N-pair form) of a square N x N similarity matrix.

    Args:
        sim: N x N matrix :math:`S` of the batch against itself, :math:`S_{ij} = x_i^\top x_j`
            with unit-length :math:`x` (cosine similarities). Square, because :math:`S_{pn}` is
            read from the positive's row.
        pos_mask, neg_mask: boolean N x N masks.
        alpha_degrees: the angle bound :math:`\alpha` in degrees, 0 < alpha <= 80.

    A pair whose anchor has no negative contributes :math:`\log 1 = 0`; without a positive pair
    the loss is 0, connected to the graph.
    """
    check_pair_inputs(sim, pos_mask, neg_mask, square=True, name="sim")
    check_alpha(alpha_degrees)
    tan_sq = math.tan(math.radians(alpha_degrees)) ** 2
    c_neg, c_pos = 4.0 * tan_sq, 2.0 * (1.0 + tan_sq)
    # beyond 4c = 60 the smallest "largest term" of a pair (e^{-4c} for cosines) nears float32's
    # underflow: do the exponentials and the product in float64 then
    work = sim.double() if 4.0 * c_neg > 60.0 and sim.dtype != torch.float64 else sim
    scaled = c_neg * work
    neg_inf = torch.full_like(work, float("-inf"))
    has_neg = neg_mask.any(dim=1)
    with torch.no_grad():
        row_neg_max = torch.where(neg_mask, scaled, neg_inf).amax(dim=1)
        mu = torch.where(has_neg, row_neg_max, torch.zeros_like(row_neg_max))
        nu = scaled.amax(dim=1)
    e_neg = torch.where(neg_mask, scaled - mu.unsqueeze(1), neg_inf).exp()
    e_all = (scaled - nu.unsqueeze(1)).exp()
    pair_sum = e_neg @ e_all.T  # [a, p] = sum_{n in N_a} exp(c S_an - mu_a) exp(c S_pn - nu_p)
    # rows without a negative: log of a placeholder 1, then replaced by -inf (softplus -> 0);
    # the tiny floor only matters if every term of a pair underflows
    safe_sum = torch.where(has_neg.unsqueeze(1), pair_sum, torch.ones_like(pair_sum))
    log_sum = safe_sum.clamp_min(torch.finfo(work.dtype).tiny).log() + mu.unsqueeze(1) + nu.unsqueeze(0)
    log_sum = torch.where(has_neg.unsqueeze(1), log_sum, neg_inf)
    losses = F.softplus(log_sum - c_pos * work)  # log(1 + sum_n exp(f_apn))
    return reduce_masked(losses, pos_mask, "mean").to(sim.dtype)
