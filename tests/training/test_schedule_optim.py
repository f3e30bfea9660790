"""Learning-rate schedules against hand computations; parameter groups and their multipliers."""

from __future__ import annotations

import math

import pytest

import torch
from torch import nn

from deepmetric.config import OptimizerConfig, SchedulerConfig
from deepmetric.errors import ConfigError
from deepmetric.training.optim import build_optimizer
from deepmetric.training.schedule import apply_lr, lr_factor
from toy_training import TinyNet, toy_registries  # noqa: F401  (fixture)


def test_warmup_then_cosine_by_hand() -> None:
    cfg = SchedulerConfig(name="cosine", warmup_steps=4, min_lr_ratio=0.0)
    total = 16
    # warm-up: 1/4, 2/4, 3/4, 4/4
    assert [lr_factor(s, total, cfg) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    # cosine over the remaining 12 steps: step 4 -> 1, step 10 -> cos(pi/2) half-way, step 15 -> ...
    assert lr_factor(4, total, cfg) == pytest.approx(1.0)
    assert lr_factor(10, total, cfg) == pytest.approx(0.5)
    assert lr_factor(15, total, cfg) == pytest.approx(0.5 * (1 + math.cos(math.pi * 11 / 12)))
    assert lr_factor(16, total, cfg) == pytest.approx(0.0, abs=1e-12)
    floor = SchedulerConfig(name="cosine", warmup_steps=0, min_lr_ratio=0.1)
    assert lr_factor(10, 10, floor) == pytest.approx(0.1)
    assert lr_factor(5, 10, floor) == pytest.approx(0.1 + 0.9 * 0.5)


def test_step_and_constant_schedules() -> None:
    cfg = SchedulerConfig(name="step", warmup_steps=2, step_size=3, gamma=0.5)
    got = [lr_factor(s, 100, cfg) for s in range(10)]
    assert got == [0.5, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25]
    none = SchedulerConfig(name="none", warmup_steps=0)
    assert {lr_factor(s, 5, none) for s in range(8)} == {1.0}


def test_param_groups_get_their_multipliers() -> None:
    model = TinyNet(embedding_dim=4)
    loss = nn.Linear(4, 3)  # stands for a loss that owns parameters (a classifier)
    cfg = OptimizerConfig(name="adamw", lr=0.01, backbone_lr_mult=0.1, head_lr_mult=1.0, loss_lr_mult=10.0)
    opt = build_optimizer(model, loss, cfg)
    groups = {g["name"]: g for g in opt.param_groups}
    assert set(groups) == {"backbone", "head", "loss"}
    assert groups["backbone"]["lr"] == pytest.approx(0.001)
    assert groups["head"]["lr"] == pytest.approx(0.01)
    assert groups["loss"]["lr"] == pytest.approx(0.1)
    ids = lambda ps: {id(p) for p in ps}  # noqa: E731
    assert ids(groups["backbone"]["params"]) == ids(model.backbone.parameters())
    assert ids(groups["head"]["params"]) == ids(model.head.parameters())
    assert ids(groups["loss"]["params"]) == ids(loss.parameters())
    apply_lr(opt, 0.5)
    assert groups["backbone"]["lr"] == pytest.approx(0.0005) and groups["loss"]["lr"] == pytest.approx(0.05)


def test_zero_multiplier_freezes_and_sgd_options() -> None:
    model = TinyNet()
    cfg = OptimizerConfig(name="sgd", lr=0.1, momentum=0.8, nesterov=True, backbone_lr_mult=0.0)
    opt = build_optimizer(model, nn.Identity(), cfg)
    assert isinstance(opt, torch.optim.SGD)
    assert [g["name"] for g in opt.param_groups] == ["head"]
    assert all(not p.requires_grad for p in model.backbone.parameters())
    assert opt.param_groups[0]["momentum"] == 0.8 and opt.param_groups[0]["nesterov"] is True
    with pytest.raises(ConfigError, match="nothing to train"):
        build_optimizer(TinyNet(), nn.Identity(), OptimizerConfig(backbone_lr_mult=0.0, head_lr_mult=0.0))


def test_model_without_backbone_split_is_all_head() -> None:
    model = nn.Linear(3, 2)
    opt = build_optimizer(model, nn.Identity(), OptimizerConfig(lr=1.0))
    assert [g["name"] for g in opt.param_groups] == ["head"]


def test_warmup_is_capped_at_half_of_short_runs() -> None:
    from deepmetric.config import SchedulerConfig
    from deepmetric.training.schedule import effective_warmup, lr_factor

    assert effective_warmup(100, 2000) == 100
    assert effective_warmup(100, 12) == 6
    assert effective_warmup(100, 2) == 1
    assert effective_warmup(0, 12) == 0
    cfg = SchedulerConfig(name="none", warmup_steps=100)
    assert [lr_factor(s, 6, cfg) for s in range(4)] == [1 / 3, 2 / 3, 1.0, 1.0]


def test_an_untrained_best_checkpoint_is_a_warning_in_metrics_json(tmp_path, toy_registries) -> None:
    from deepmetric.training import fit
    from toy_training import toy_config

    # a step of 1e-30 is below float32 resolution: the weights never move, so validation never
    # improves on step 0
    frozen = ("optimizer.lr=1e-30", "optimizer.weight_decay=0", "optimizer.momentum=0")
    summary = fit(toy_config("trainer.steps=2", *frozen), tmp_path / "r", progress=False, report=False)
    assert summary["test_step"] == 0
    assert any("untrained network (step 0)" in w for w in summary["warnings"])
    trained = fit(toy_config("trainer.steps=2", "eval.checkpoint=last", *frozen), tmp_path / "s",
                  progress=False, report=False)
    assert trained["test_step"] == 2 and not any("untrained" in w for w in trained["warnings"])
