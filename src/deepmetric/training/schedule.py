"""Learning-rate schedules as a pure function of the step, applied to every parameter group.

Each group stores its own ``base_lr`` (``optimizer.lr`` x its multiplier); before step ``s`` the
group's ``lr`` is set to ``base_lr * lr_factor(s, ...)``. The schedule therefore has no state
beyond the step counter, which makes resuming exact.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer

from deepmetric.config import SchedulerConfig
from deepmetric.errors import ConfigError

__all__ = ["apply_lr", "effective_warmup", "lr_factor"]


def effective_warmup(warmup_steps: int, total_steps: int) -> int:
    """The warm-up length used: ``warmup_steps``, capped at half of the run (at least 1 step when
    warm-up is on) so that a short run still trains at its full learning rate. A capped warm-up
    depends on the run's length, so extending such a run (resume with more steps) changes it."""
    if warmup_steps <= 0:
        return 0
    return max(1, min(warmup_steps, total_steps // 2))


def lr_factor(step: int, total_steps: int, config: SchedulerConfig) -> float:
    r"""Multiplier of the base learning rate at 0-based ``step`` of ``total_steps``.

    With W = :func:`effective_warmup` (``warmup_steps``, at most half of ``total_steps``, so a
    short run is not all warm-up): for step < W the factor is (step + 1) / W (linear warm-up).
    After warm-up, with t = step - W and T = max(1, total_steps - W):

    * ``none``:   1
    * ``step``:   gamma ^ floor(t / step_size)
    * ``cosine``: r + (1 - r) (1 + cos(pi min(t, T) / T)) / 2, r = ``min_lr_ratio``
      (cosine annealing, Loshchilov and Hutter, "SGDR", ICLR 2017, without restarts).
    """
    if step < 0:
        raise ConfigError(f"schedule step must be >= 0, got {step}")
    warmup = effective_warmup(config.warmup_steps, total_steps)
    if step < warmup:
        return (step + 1) / warmup
    t = step - warmup
    if config.name == "none":
        return 1.0
    if config.name == "step":
        return config.gamma ** (t // config.step_size)
    horizon = max(1, total_steps - warmup)
    r = config.min_lr_ratio
    return r + (1.0 - r) * 0.5 * (1.0 + math.cos(math.pi * min(t, horizon) / horizon))


def apply_lr(optimizer: Optimizer, factor: float) -> None:
    """Set every group's ``lr`` to its ``base_lr`` times ``factor``."""
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * factor
