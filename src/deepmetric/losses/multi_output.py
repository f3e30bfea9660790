r"""One loss per named model output, weighted: :math:`L = \sum_h w_h\, L_h(o_h, y_h)`.

For a model with named outputs (:class:`~deepmetric.models.contracts.MultiOutputModel`: the
heads of a multi-level embedder, the frame and tracklet embeddings of a video model). Every
output gets its own loss object (so losses that own parameters, such as OSM+CAA's classifier,
get one set per output). Labels per output (the contract of named outputs):

* an output of shape ``(B, D)`` is labelled by the batch labels ``y`` (B,);
* an output of shape ``(B, T, D)`` is flattened to ``(B*T, D)`` and labelled by each item's label
  repeated T times (every frame of a tracklet carries its identity).

Outputs that the loss does not name (the evaluation ``embedding``, for instance) are ignored.
After each call ``last_losses`` holds the per-output values (floats) for logging.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence

from torch import Tensor, nn

from deepmetric.errors import ConfigError, InputError

__all__ = ["MultiOutputLoss", "MultiHeadLoss", "flatten_output"]

LossSpec = Mapping[str, nn.Module] | Sequence[nn.Module] | Callable[[str, int], nn.Module]


def flatten_output(output: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """``(B, D), (B,)`` unchanged; ``(B, T, D), (B,)`` -> ``(B*T, D), (B*T,)`` (labels repeated)."""
    if output.dim() == 2:
        return output, labels
    if output.dim() == 3:
        b, t = output.shape[:2]
        return output.reshape(b * t, -1), labels.repeat_interleave(t)
    raise InputError(f"a named output must be (B, D) or (B, T, D), got shape {tuple(output.shape)}")


class MultiOutputLoss(nn.Module):
    r"""Sum of one loss per named output, :math:`\sum_h w_h L_h`.

    Args:
        losses: ``{output: loss}``, a list of losses in ``outputs`` order, or a factory
            ``factory(output_name, embedding_dim) -> loss`` (then ``outputs`` is required).
        outputs: ``{output name: embedding size}`` (the model's ``output_dims``).
        weights: ``{output: w_h}`` (default 1 for every output); a weight of 0 leaves that
            output's loss out of the computation.
    """

    def __init__(
        self,
        losses: LossSpec,
        outputs: Mapping[str, int] | None = None,
        weights: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__()
        if isinstance(losses, Mapping):
            built = dict(losses)
        elif isinstance(losses, nn.Module):
            raise ConfigError(
                "MultiOutputLoss needs one loss per output: pass {output: loss}, a list, or a factory "
                "(output_name, embedding_dim) -> loss"
            )
        elif callable(losses):
            if outputs is None:
                raise ConfigError("a loss factory needs outputs={name: embedding_dim}; pass model.output_dims")
            built = {h: losses(h, d) for h, d in outputs.items()}
        else:
            losses = list(losses)
            if outputs is None or len(outputs) != len(losses):
                raise ConfigError(
                    f"a list of {len(losses)} losses needs outputs with as many names; pass model.output_dims"
                )
            built = dict(zip(outputs, losses))
        if not built:
            raise ConfigError("MultiOutputLoss needs at least one output")
        weights = dict(weights or {})
        unknown = set(weights) - set(built)
        if unknown:
            raise ConfigError(
                f"loss.heads names unknown outputs {sorted(unknown)}; the model's outputs are {list(built)}"
            )
        if any(w < 0 for w in weights.values()):
            raise ConfigError(f"loss.heads weights must be >= 0, got {weights}")
        self.weights = {h: float(weights.get(h, 1.0)) for h in built}
        if not any(self.weights.values()):
            raise ConfigError("every loss.heads weight is 0, so nothing is trained; set one > 0")
        self.losses = nn.ModuleDict(built)
        self.last_losses: dict[str, float] = {}

    @classmethod
    def from_registry(cls, name: str, outputs: Mapping[str, int], **params: object) -> MultiOutputLoss:
        """One registered loss per output; ``embedding_dim`` is passed to losses that take it."""
        from deepmetric.losses import build_loss, loss_class

        takes_dim = "embedding_dim" in inspect.signature(loss_class(name)).parameters
        return cls(lambda h, d: build_loss(name, **({"embedding_dim": d} if takes_dim else {}), **params), outputs)

    def wrapped_losses(self) -> list[nn.Module]:
        return [self.losses[h] for h in self.losses if self.weights[h] > 0]

    def forward(self, outputs: Mapping[str, Tensor] | Sequence[Tensor], labels: Tensor) -> Tensor:
        if isinstance(outputs, Tensor):
            raise InputError(
                "MultiOutputLoss got one tensor; it needs the named outputs of a multi-output model"
            )
        if not isinstance(outputs, Mapping):
            outputs = dict(zip(self.losses.keys(), outputs))
        missing = [h for h in self.losses if h not in outputs]
        if missing:
            raise InputError(f"model outputs lack {missing} (got {list(outputs)}); build the loss with model.output_dims")
        total: Tensor | None = None
        self.last_losses = {}
        for head, loss_fn in self.losses.items():
            if self.weights[head] == 0:
                continue
            value = loss_fn(*flatten_output(outputs[head], labels))
            self.last_losses[head] = float(value.detach())
            term = self.weights[head] * value
            total = term if total is None else total + term
        assert total is not None
        return total

    def extra_repr(self) -> str:
        return f"weights={self.weights}"


#: the earlier name, kept for the multi-level RLL code and user scripts
MultiHeadLoss = MultiOutputLoss
