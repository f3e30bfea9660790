"""Hand-written backward passes for pair losses and Euclidean distances.

A loss that computes its value and its gradient w.r.t. the pair matrix in closed form returns
:class:`ClosedFormGradient`'s output, so autograd stores ONE N x M gradient instead of a long chain
of taped element-wise ops; :func:`euclidean_distances_closed_form` does the same for the distance
matrix. Neither has a second derivative (``backward(create_graph=True)`` raises a clear error).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx

from deepmetric.errors import ConfigError

class ClosedFormGradient(torch.autograd.Function):
    """A loss whose value and gradient w.r.t. its pair matrix were computed without taping.

    ``apply(matrix, value, grad)`` returns ``value`` (a scalar) connected to ``matrix``; the
    backward pass is the single product ``grad * upstream``. The pair losses use it so that one
    N x M gradient is stored instead of a long chain of taped N x M element-wise ops. It has no
    second derivative (``create_graph=True`` raises).
    """

    @staticmethod
    def forward(ctx: FunctionCtx, matrix: Tensor, value: Tensor, grad: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(grad)
        return value.to(matrix.dtype)

    @staticmethod
    def backward(ctx: FunctionCtx, upstream: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        if torch.is_grad_enabled():
            raise ConfigError(
                "this pair loss uses a closed-form gradient without a second derivative; "
                "backward(create_graph=True) is not supported for it"
            )
        (grad,) = ctx.saved_tensors  # type: ignore[attr-defined]
        return grad * upstream, None, None


class _EuclideanDistances(torch.autograd.Function):
    r"""Forward: :func:`deepmetric.functional.euclidean_distance_matrix` (same values). Backward,
    written out: with :math:`G` the upstream gradient and
    :math:`H = G / (2 d)` where :math:`d^2 > 10^{-16}` (else 0, as ``safe_sqrt``),
    :math:`\partial/\partial x = 2\,\mathrm{diag}(H 1) x - 2 H y` and
    :math:`\partial/\partial y = 2\,\mathrm{diag}(H^\top 1) y - 2 H^\top x`; for
    :math:`y = x` both are summed into ONE matrix product :math:`(H + H^\top) x`."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: Tensor, y: Tensor | None) -> Tensor:  # type: ignore[override]
        from deepmetric.functional.distances import euclidean_distance_matrix

        dist = euclidean_distance_matrix(x, y)
        ctx.save_for_backward(x, y if y is not None else x, dist)
        ctx.same = y is None
        return dist

    @staticmethod
    def backward(ctx: FunctionCtx, upstream: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        if torch.is_grad_enabled():
            raise ConfigError(
                "the closed-form Euclidean distance gradient has no second derivative; use "
                "deepmetric.functional.euclidean_distance_matrix for backward(create_graph=True)"
            )
        x, y, dist = ctx.saved_tensors  # type: ignore[attr-defined]
        # safe_sqrt gives d = 0 exactly where d^2 <= 1e-16 (and there a zero gradient)
        h = torch.where(dist > 0, upstream * 0.5 / dist, torch.zeros_like(dist))
        if ctx.same:  # type: ignore[attr-defined]
            h = h + h.T
            grad_x = x * h.sum(dim=1, keepdim=True).mul_(2.0) - (h @ x).mul_(2.0)
            return grad_x, None
        grad_x = x * h.sum(dim=1, keepdim=True).mul_(2.0) - (h @ y).mul_(2.0)
        grad_y = y * h.sum(dim=0).unsqueeze(1).mul_(2.0) - (h.T @ x).mul_(2.0)
        return grad_x, grad_y


def euclidean_distances_closed_form(x: Tensor, y: Tensor | None = None) -> Tensor:
    """:func:`deepmetric.functional.euclidean_distance_matrix` (identical values) with a
    hand-written backward pass: one matrix product instead of the two of the taped Gram matrix,
    and no taped element-wise chain. Once differentiable only."""
    return _EuclideanDistances.apply(x, y)
