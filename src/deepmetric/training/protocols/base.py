"""The protocol contract: a recipe's ``protocol`` section turns one config into sub-runs.

A protocol (``protocol.name``) plans a list of :class:`SubRun`: a name (the sub-folder), the
config of that training (the recipe's config with its split selected), the parameters that
distinguish it, and a group (sub-runs of one group are averaged together in ``summary.json``).
Every sub-run is an ordinary :func:`~deepmetric.training.fit` run folder; a sub-run may start
from the weights of an earlier one (``model.init_from``), e.g. fine-tuning after pre-training.

:func:`~deepmetric.training.protocols.runner.run_protocol` trains the plan in order, skipping
finished sub-runs and resuming an interrupted one, then writes ``summary.json``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from deepmetric.config import Config
from deepmetric.errors import ConfigError

__all__ = ["RunProtocol", "SubRun", "loader_parameters", "with_data_params"]


@dataclass(frozen=True)
class SubRun:
    """One training of a protocol: ``run_dir/<name>/`` trained with ``config``."""

    name: str
    config: Config
    params: dict[str, Any] = field(default_factory=dict)
    group: str = "all"


class RunProtocol(Protocol):
    """Plans the sub-runs of one recipe."""

    def plan(self, config: Config, run_dir: Path) -> list[SubRun]:
        """The sub-runs, in training order (a sub-run may start from an earlier one's folder)."""
        ...


def loader_parameters(config: Config) -> set[str]:
    """The parameter names of the dataset loader ``data.name``."""
    from deepmetric.data.registry import DATASETS

    return set(inspect.signature(DATASETS.resolve(config.data.name)).parameters)


def with_data_params(config: Config, **params: Any) -> Config:
    """``config`` with ``data.params`` updated (validated like any config)."""
    from deepmetric.config import load_config

    data = config.to_dict()
    data["data"]["params"] = {**data["data"]["params"], **params}
    return load_config(data)


def require_loader_params(config: Config, needed: set[str], protocol: str, hint: str) -> None:
    """Raise :class:`ConfigError` if the loader lacks ``needed`` parameters."""
    missing = sorted(needed - loader_parameters(config))
    if missing:
        raise ConfigError(
            f"protocol.name={protocol} needs a dataset loader with the parameters {', '.join(sorted(needed))}, "
            f"but data.name={config.data.name} lacks {', '.join(missing)}; {hint}"
        )
