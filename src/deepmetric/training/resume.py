"""Resuming a run: which config keys may change between a run and its resumption, and the check
that nothing else did (a changed loss or data split would make the resumed run a different run).

:data:`RESUMABLE_CHANGES` are the keys that only lengthen, shorten or re-schedule a run, or move it
to other hardware; :func:`check_resume_config` refuses any other difference with one line naming
the keys, and returns the resumable ones that changed (said in the log).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deepmetric.config import Config, load_config
from deepmetric.errors import ConfigError

__all__ = ["RESUMABLE_CHANGES", "check_resume_config", "config_differences"]

#: config keys that may differ between a run and its resumption
RESUMABLE_CHANGES = (
    "trainer.steps", "trainer.epochs", "trainer.eval_every", "trainer.checkpoint_every",
    "trainer.log_every", "trainer.early_stopping_patience", "data.num_workers", "device",
    "eval.batch_size",
)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "params" and not k.endswith("_params"):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_differences(saved: Config, config: Config) -> list[str]:
    """Dotted keys whose values differ between two configs, except :data:`RESUMABLE_CHANGES`."""
    before, now = _flatten(saved.to_dict()), _flatten(config.to_dict())
    return sorted(k for k in set(now) | set(before) if before.get(k) != now.get(k) and k not in RESUMABLE_CHANGES)


def check_resume_config(saved_path: Path, config: Config) -> dict[str, tuple[Any, Any]]:
    """The resumable keys that change (``{key: (saved, now)}``); any other change is an error."""
    saved = load_config(saved_path)
    changed = config_differences(saved, config)
    if changed:
        raise ConfigError(
            f"cannot resume: the config differs from the run's config.yaml in {', '.join(changed)}; "
            f"resume with the saved config (only {', '.join(RESUMABLE_CHANGES)} may change) or start a new run folder"
        )
    before, now = _flatten(saved.to_dict()), _flatten(config.to_dict())
    return {k: (before.get(k), now.get(k)) for k in RESUMABLE_CHANGES if before.get(k) != now.get(k)}
