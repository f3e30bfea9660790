"""Robust fine-tuning of a pretrained backbone: LP-FT, an EMA of the weights, WiSE-FT (``finetune.*``).

Contract (used by :mod:`deepmetric.training.fit`; every piece is off unless its key is set):

* :class:`BackboneFreeze` -- LP-FT (Kumar et al., ICLR 2022, "Fine-Tuning can Distort Pretrained
  Features and Underperform Out-of-Distribution"). ``apply(step)`` runs after ``model.train()`` and
  before the forward pass of the step that starts with ``step`` optimizer steps done. While
  ``step < steps`` every parameter of the optimizer's ``backbone`` group has ``requires_grad=False``
  and no ``.grad``: it gets no gradient, and torch's SGD / AdamW skip it entirely (no update, no
  weight decay, no optimizer state created for it); the modules whose parameters all belong to the
  backbone are in eval mode (BatchNorm statistics stay, dropout is off: the backbone is a fixed
  feature extractor, as in a linear probe). Over those steps no backbone parameter or buffer
  changes, bitwise. From ``steps`` on everything trains; the optimizer creates the backbone's state
  (momentum, Adam moments and step count) at its first update. What is frozen is a function of the
  step only, so a resumed run freezes exactly like an uninterrupted one. A model must declare its
  backbone (:class:`~deepmetric.models.contracts.HasBackbone`).
* :class:`WeightEMA` -- an exponential moving average of the weights (Polyak averaging; as timm's
  ``ModelEmaV2``). ``update(step)`` runs once with ``step = 0`` before training and after every
  optimizer step with the number of steps done: before ``start_step`` it does nothing, the first
  call at or after ``start_step`` copies the weights, every later one sets
  ``ema = decay * ema + (1 - decay) * weights``. Averaged: the model's floating-point state
  (parameters and buffers such as BatchNorm statistics) and the loss's parameters (classifier,
  proxies, centers); everything else (integer buffers, a loss's memory bank) is taken from the live
  modules when the averaged weights are used. ``state_dict`` / ``load_state_dict`` go into the
  checkpoint so a resumed run continues the same average. Every process of a multi-process run
  holds the same weights, so every process keeps the same average.
* :func:`interpolate_state` -- WiSE-FT (Wortsman et al., CVPR 2022, "Robust fine-tuning of
  zero-shot models"): ``theta(alpha) = (1 - alpha) * theta_initial + alpha * theta_finetuned`` for
  every floating-point entry of a state dict (parameters and buffers alike); integer entries
  (``num_batches_tracked``) are the fine-tuned ones. ``alpha = 0`` gives the initial entries and
  ``alpha = 1`` the fine-tuned ones exactly.
* :func:`swapped_weights` -- load other weights into a model and its loss for the duration of a
  ``with`` block; the previous weights come back bitwise.

Errors are one-line :class:`~deepmetric.errors.ConfigError` / :class:`~deepmetric.errors.DataError`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from deepmetric.errors import ConfigError, DataError
from deepmetric.models.contracts import HasBackbone

__all__ = ["BackboneFreeze", "WeightEMA", "backbone_modules", "interpolate_state", "swapped_weights"]


def backbone_modules(model: nn.Module, backbone_ids: set[int]) -> list[nn.Module]:
    """The largest submodules of ``model`` whose parameters (at least one) all have their ``id``
    in ``backbone_ids`` (their children, parameter-free ones included, belong to them)."""
    found: list[nn.Module] = []

    def visit(module: nn.Module) -> None:
        params = list(module.parameters())
        if params and all(id(p) in backbone_ids for p in params):
            found.append(module)
            return
        for child in module.children():
            visit(child)

    visit(model)
    return found


class BackboneFreeze:
    """LP-FT: the backbone is frozen for the first ``steps`` optimizer steps (see the module docstring)."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, steps: int) -> None:
        name = type(model).__name__
        if not isinstance(model, HasBackbone):
            raise ConfigError(
                f"finetune.linear_probe_steps needs a model that declares its backbone, but {name} has no "
                "backbone_parameters() (deepmetric.models.contracts.HasBackbone); add that method or set "
                "finetune.linear_probe_steps=0"
            )
        params = [p for g in optimizer.param_groups if g.get("name") == "backbone" for p in g["params"]]
        if not params:
            raise ConfigError(
                f"finetune.linear_probe_steps: {name} has no trained backbone parameters (its backbone_parameters() "
                "is empty, or optimizer.backbone_lr_mult=0 freezes the backbone for the whole run); set "
                "finetune.linear_probe_steps=0"
            )
        self.steps = int(steps)
        self.params: list[nn.Parameter] = params
        self.modules = backbone_modules(model, {id(p) for p in model.backbone_parameters()})

    def frozen(self, step: int) -> bool:
        """Whether the step that starts with ``step`` optimizer steps done trains the head only."""
        return step < self.steps

    def apply(self, step: int) -> None:
        """Freeze or release the backbone for the step that starts with ``step`` steps done
        (call after ``model.train()``, before the forward pass)."""
        frozen = self.frozen(step)
        for p in self.params:
            p.requires_grad_(not frozen)
            if frozen:
                p.grad = None
        if frozen:
            for module in self.modules:
                module.eval()

    def release(self) -> None:
        """Make every backbone parameter trainable again (after training)."""
        for p in self.params:
            p.requires_grad_(True)


class WeightEMA:
    """Exponential moving average of a model's and its loss's weights (see the module docstring)."""

    def __init__(self, model: nn.Module, loss: nn.Module, decay: float, start_step: int = 0) -> None:
        if not 0.0 < decay < 1.0:
            raise ConfigError(f"finetune.ema_decay must be in (0, 1), e.g. 0.999, got {decay}")
        self.model, self.loss = model, loss
        self.decay, self.start_step = float(decay), int(start_step)
        #: the averaged entries, keyed ``model.<name>`` / ``loss.<name>``; None before the start
        self.shadow: dict[str, Tensor] | None = None

    def _live(self) -> dict[str, Tensor]:
        """The averaged entries of the current weights."""
        out = {f"model.{k}": v for k, v in self.model.state_dict().items() if v.is_floating_point()}
        loss_params = {k for k, _ in self.loss.named_parameters(remove_duplicate=False)}
        out.update({f"loss.{k}": v for k, v in self.loss.state_dict().items()
                    if k in loss_params and v.is_floating_point()})
        return out

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Account for the weights after ``step`` optimizer steps (0 = the initial weights)."""
        if step < self.start_step:
            return
        live = self._live()
        if self.shadow is None:
            self.shadow = {k: v.detach().clone() for k, v in live.items()}
            return
        if live.keys() != self.shadow.keys():
            raise DataError("the EMA of the weights does not match the model and loss any more; start a new run")
        for key, value in live.items():
            self.shadow[key].mul_(self.decay).add_(value.detach(), alpha=1.0 - self.decay)

    def weights(self) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """(model state dict, loss state dict) with the averaged entries in place of the live ones."""
        if self.shadow is None:
            raise DataError(f"the EMA of the weights starts at step {self.start_step} and has not started yet")
        parts: dict[str, dict[str, Tensor]] = {"model": dict(self.model.state_dict()),
                                               "loss": dict(self.loss.state_dict())}
        for key, value in self.shadow.items():
            part, name = key.split(".", 1)
            parts[part][name] = value
        return parts["model"], parts["loss"]

    def state_dict(self) -> dict[str, Any]:
        """For the checkpoint: decay, start step and the averaged entries (None before the start)."""
        return {"decay": self.decay, "start_step": self.start_step, "shadow": self.shadow}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        shadow = state["shadow"]
        self.shadow = None if shadow is None else {k: v.detach().clone() for k, v in shadow.items()}


def interpolate_state(
    initial: Mapping[str, Tensor], finetuned: Mapping[str, Tensor], alpha: float
) -> dict[str, Tensor]:
    """WiSE-FT: ``(1 - alpha) * initial + alpha * finetuned`` for every floating-point entry (on
    ``finetuned``'s device and dtype); other entries are ``finetuned``'s (copies)."""
    if initial.keys() != finetuned.keys():
        missing = sorted(set(initial) ^ set(finetuned))
        raise DataError(f"WiSE-FT: the initial and fine-tuned weights differ in entries {missing[:3]}; "
                        "they must come from the same model")
    out: dict[str, Tensor] = {}
    for key, tuned in finetuned.items():
        start = initial[key]
        if start.shape != tuned.shape:
            raise DataError(f"WiSE-FT: entry '{key}' has shape {tuple(start.shape)} initially and "
                            f"{tuple(tuned.shape)} fine-tuned; they must come from the same model")
        if tuned.is_floating_point():
            start = start.to(device=tuned.device, dtype=tuned.dtype)
            out[key] = (1.0 - alpha) * start + alpha * tuned.detach()
        else:
            out[key] = tuned.detach().clone()
    return out


@contextlib.contextmanager
def swapped_weights(
    model: nn.Module, loss: nn.Module, model_state: Mapping[str, Tensor], loss_state: Mapping[str, Tensor]
) -> Iterator[None]:
    """Load ``model_state`` / ``loss_state`` into ``model`` / ``loss`` inside the block; the
    previous weights are copied back (in place, bitwise) when it ends."""
    saved = ({k: v.detach().clone() for k, v in model.state_dict().items()},
             {k: v.detach().clone() for k, v in loss.state_dict().items()})
    model.load_state_dict(model_state)
    loss.load_state_dict(loss_state)
    try:
        yield
    finally:
        model.load_state_dict(saved[0])
        loss.load_state_dict(saved[1])
