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

**Gradient**, written out (one N x N tensor is stored, nothing is taped): with
:math:`w_{ap} = \sigma(\log\Sigma_{ap} - 2(1+\tan^2\alpha) S_{ap}) / |P|` on pairs whose anchor
has a negative, :math:`\Sigma_{ap} = (E^{neg} E^\top)_{ap}` and :math:`R = w / \Sigma`,

.. math::

    \frac{\partial L}{\partial S} = -2(1+\tan^2\alpha)\, w
        + c\, E^{neg} \odot (R E) + c\, E \odot (R^\top E^{neg}),

two matrix products, as in the taped backward pass, but no chain of N x N element-wise ops.
Only the entries of :math:`\Sigma` and :math:`R` at positive pairs matter, so when every anchor has
few positives (at most P, with N P M small) the three products are done per positive instead
(gathers and batched products, O(N P M) rather than O(N^2 M)).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from deepmetric.errors import ConfigError
from deepmetric.functional.closed_form import ClosedFormGradient
from deepmetric.functional.reductions import reduce_masked
from deepmetric.functional.validation import check_pair_inputs
from deepmetric.functional.triplet import positive_columns

#: the per-positive path is used while (most positives of an anchor) x N x N stays below this
PER_POSITIVE_MAX_ENTRIES: int = 1 << 24


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
    value, grad = _angular_closed_form(sim.detach(), pos_mask, neg_mask, alpha_degrees)
    return ClosedFormGradient.apply(sim, value, grad)


@torch.no_grad()
def _angular_closed_form(
    sim: Tensor, pos_mask: Tensor, neg_mask: Tensor, alpha_degrees: float
) -> tuple[Tensor, Tensor]:
    """Value and d(loss)/d(sim) of :func:`angular_loss` (module docstring)."""
    tan_sq = math.tan(math.radians(alpha_degrees)) ** 2
    c_neg, c_pos = 4.0 * tan_sq, 2.0 * (1.0 + tan_sq)
    work = sim.double() if 4.0 * c_neg > 60.0 and sim.dtype != torch.float64 else sim
    scaled = c_neg * work
    has_neg = neg_mask.any(dim=1)
    neg_scaled = scaled.masked_fill(~neg_mask, float("-inf"))
    mu = neg_scaled.amax(dim=1, keepdim=True)
    mu = torch.where(has_neg.unsqueeze(1), mu, torch.zeros_like(mu))
    nu = scaled.amax(dim=1, keepdim=True)
    e_neg = neg_scaled.sub_(mu).exp_()  # 0 off the negatives
    e_all = scaled.sub_(nu).exp_()
    n = sim.shape[0]
    table = positive_columns(pos_mask) if n > 0 else None
    if table is not None and table[0].shape[1] * n * n <= PER_POSITIVE_MAX_ENTRIES:
        cols, real = table
        n_pos = pos_mask.sum().to(work.dtype).clamp_min(1.0)
        valid_pos = real & has_neg.unsqueeze(1)
        value, grad = _per_positive(work, e_neg, e_all, mu, nu, cols, valid_pos, n_pos, c_neg, c_pos)
        return value.to(sim.dtype), grad.to(sim.dtype)
    pair_sum = e_neg @ e_all.T
    tiny = torch.finfo(work.dtype).tiny
    logits = pair_sum.clamp_min(tiny).log_().add_(mu).add_(nu.T).sub_(c_pos * work)
    valid = pos_mask & has_neg.unsqueeze(1)
    n_pos = pos_mask.sum().to(work.dtype)
    n_pos = torch.where(n_pos > 0, n_pos, torch.ones_like(n_pos))
    value = F.softplus(logits).mul_(valid).sum() / n_pos
    w = logits.sigmoid_().mul_(valid).div_(n_pos)
    # R = w / Sigma (0 where the clamp at ``tiny`` was active: no gradient flows there)
    ratio = torch.where(pair_sum >= tiny, w / pair_sum, torch.zeros_like(w))
    grad = (ratio @ e_all).mul_(e_neg).add_((ratio.T @ e_neg).mul_(e_all)).mul_(c_neg).sub_(w.mul_(c_pos))
    return value.to(sim.dtype), grad.to(sim.dtype)


def _per_positive(
    work: Tensor,
    e_neg: Tensor,
    e_all: Tensor,
    mu: Tensor,
    nu: Tensor,
    cols: Tensor,
    valid: Tensor,
    n_pos: Tensor,
    c_neg: float,
    c_pos: float,
) -> tuple[Tensor, Tensor]:
    """The closed form restricted to the positive pairs, given as an N x P column table
    (``valid`` marks real positives whose anchor has a negative)."""
    n, p = cols.shape
    flat = cols.reshape(-1)
    e_pos = e_all.index_select(0, flat).view(n, p, e_all.shape[1])  # [a, j, :] = E row of a's j-th positive
    pair_sum = torch.bmm(e_pos, e_neg.unsqueeze(2)).squeeze(2)  # Sigma at (a, cols[a, j])
    tiny = torch.finfo(work.dtype).tiny
    logits = pair_sum.clamp_min(tiny).log_().add_(mu).add_(nu.squeeze(1)[cols])
    logits.sub_(work.gather(1, cols).mul_(c_pos))
    value = F.softplus(logits).mul_(valid).sum() / n_pos
    w = logits.sigmoid_().mul_(valid).div_(n_pos)
    ratio = torch.where(pair_sum >= tiny, w / pair_sum, torch.zeros_like(w))
    # c E^neg (R E) restricted to the positive columns of each row
    grad = torch.bmm(ratio.unsqueeze(1), e_pos).squeeze(1).mul_(e_neg)
    # c E (R^T E^neg): row p gathers R_ap E^neg_a over the anchors a having p as a positive
    spread = (ratio.unsqueeze(2) * e_neg.unsqueeze(1)).view(n * p, e_neg.shape[1])
    grad.add_(torch.zeros_like(e_all).index_add_(0, flat, spread).mul_(e_all)).mul_(c_neg)
    grad.scatter_add_(1, cols, w.mul_(-c_pos))
    return value, grad


def angular_loss_taped(sim: Tensor, pos_mask: Tensor, neg_mask: Tensor, alpha_degrees: float = 40.0) -> Tensor:
    """:func:`angular_loss` taped op by op by autograd (slower; twice differentiable)."""
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
