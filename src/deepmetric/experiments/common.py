"""Pieces shared by the experiment pipelines (scene classification, skin lesions)."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from deepmetric.config import Config, load_config
from deepmetric.errors import ConfigError

__all__ = ["check_same_config", "classifier_trained", "unwrap_loss"]


def unwrap_loss(loss: nn.Module) -> list[nn.Module]:
    """The loss and the losses it wraps (Hybrid.metric_loss, SymmetricalSynthesis.base...)."""
    chain = [loss]
    for attr in ("metric_loss", "base_loss"):
        inner = getattr(loss, attr, None)
        if isinstance(inner, nn.Module) and inner is not loss:
            chain += unwrap_loss(inner)
            break
    return chain


def classifier_trained(part: nn.Module) -> bool:
    """A classifier head is trained unless its cross-entropy term is switched off."""
    return bool(getattr(part, "use_ce", True)) and float(getattr(part, "ce_weight", 1.0)) > 0


def check_same_config(run_dir: Path, config: Config) -> None:
    """A run folder from an earlier call (one split or fold) is reused only for the same config;
    raises :class:`ConfigError` naming the keys that differ (``data.num_workers`` may change)."""
    saved_path = run_dir / "config.yaml"
    if not saved_path.is_file():
        return
    ignore = {"num_workers"}
    saved = load_config(saved_path).to_dict()
    now = config.to_dict()
    for section in (saved, now):
        section["data"] = {k: v for k, v in section["data"].items() if k not in ignore}
    if saved != now:
        changed = sorted(
            f"{k}.{kk}" if isinstance(v, dict) else k
            for k, v in now.items()
            for kk in (v if isinstance(v, dict) else [None])
            if (saved.get(k) if kk is None else (saved.get(k) or {}).get(kk)) != (v if kk is None else v[kk])
        )
        raise ConfigError(
            f"'{run_dir}' holds a run of a different config (differs in {', '.join(changed)}); "
            "choose a new output folder (--out) or delete the old one"
        )
