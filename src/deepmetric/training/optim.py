"""Optimizer with three parameter groups: backbone, embedding head, loss parameters.

The backbone learns ``backbone_lr_mult`` (default 0.1) times slower than the head, following the
observation in METHODS.md ("Training practice") that fine-tuning a pretrained backbone at the
head's rate can make unseen-class retrieval worse than the pretrained features. Loss parameters
(classifier weights, proxies, centers) get their own multiplier.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from deepmetric.config import OptimizerConfig
from deepmetric.errors import ConfigError
from deepmetric.models.contracts import HasBackbone

__all__ = ["build_optimizer", "parameter_groups"]


def _split_model(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(backbone, head) parameters; a model that does not declare a backbone
    (:class:`~deepmetric.models.contracts.HasBackbone`) is all head."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not isinstance(model, HasBackbone):
        return [], params
    backbone_ids = {id(p) for p in model.backbone_parameters()}
    backbone = [p for p in params if id(p) in backbone_ids]
    head = [p for p in params if id(p) not in backbone_ids]  # head_parameters() and anything else
    return backbone, head


def parameter_groups(model: nn.Module, loss: nn.Module, config: OptimizerConfig) -> list[dict[str, Any]]:
    """Parameter groups ``{"name", "params", "base_lr", "lr"}`` for backbone, head and loss.

    Empty groups are left out; a parameter shared by the model and the loss belongs to the model.
    A multiplier of 0 freezes its group (its parameters get ``requires_grad=False``).
    """
    backbone, head = _split_model(model)
    seen = {id(p) for p in backbone + head}
    loss_params = [p for p in loss.parameters() if p.requires_grad and id(p) not in seen]
    groups = []
    for name, params, mult in (
        ("backbone", backbone, config.backbone_lr_mult),
        ("head", head, config.head_lr_mult),
        ("loss", loss_params, config.loss_lr_mult),
    ):
        if not params:
            continue
        if mult == 0:
            for p in params:
                p.requires_grad_(False)
            continue
        lr = config.lr * mult
        groups.append({"name": name, "params": params, "base_lr": lr, "lr": lr})
    if not groups:
        raise ConfigError(
            "nothing to train: every parameter group is empty or has a learning-rate multiplier of 0; "
            "set optimizer.head_lr_mult > 0"
        )
    return groups


def build_optimizer(model: nn.Module, loss: nn.Module, config: OptimizerConfig) -> torch.optim.Optimizer:
    """SGD or AdamW over :func:`parameter_groups`."""
    groups = parameter_groups(model, loss, config)
    if config.name == "sgd":
        return torch.optim.SGD(
            groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov,
            weight_decay=config.weight_decay,
        )
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
