"""Names of the files in a run folder (see docs/run_folder.md) and loading a trained model back."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["RunPaths", "load_trained"]


@dataclass(frozen=True)
class RunPaths:
    """Every file a run writes, relative to its folder ``root``."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def log(self) -> Path:
        return self.root / "log.csv"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def last(self) -> Path:
        return self.checkpoints / "last.pt"

    @property
    def best(self) -> Path:
        return self.checkpoints / "best.pt"

    @property
    def test_embeddings(self) -> Path:
        return self.root / "test_embeddings.npz"


def _builder_params(name: str) -> set[str]:
    import inspect

    from deepmetric.models.registry import MODELS

    return set(inspect.signature(MODELS.resolve(name)).parameters)


def load_trained(
    run_dir: str | Path, which: str = "best", device: str | torch.device = "cpu"
) -> tuple[nn.Module, nn.Module, Any]:
    """(model, loss, config) of a finished or interrupted run, weights from ``checkpoints/<which>.pt``,
    model in eval mode. The model is rebuilt from the run's ``config.yaml`` without downloading
    anything (its pretrained weights are replaced by the checkpoint's)."""
    from deepmetric.config import load_config
    from deepmetric.models.contracts import trained_outputs
    from deepmetric.training.builders import build_loss_from_config, build_model, embedding_dim_of
    from deepmetric.training.checkpoint import load_checkpoint

    paths = RunPaths(Path(run_dir))
    config = load_config(paths.config)
    state = load_checkpoint(paths.checkpoints / f"{which}.pt", map_location=device)
    # the checkpoint replaces every weight, so never read (or download) pretrained weights here;
    # keep the BatchNorm behaviour the run trained with
    from deepmetric.training.builders import resolved_freeze_bn

    accepted = _builder_params(config.model.name)
    overrides = ["model.init_from=null"]
    if "pretrained" in accepted:
        overrides.append("model.pretrained=false")
        if "freeze_bn" in accepted:
            overrides.append(f"model.freeze_bn={str(resolved_freeze_bn(config.model)).lower()}")
    model = build_model(load_config(config, overrides))
    model.load_state_dict(state["model"])
    loss = build_loss_from_config(config.loss, int(state["num_classes"]), embedding_dim_of(model),
                                  outputs=trained_outputs(model))
    loss.load_state_dict(state["loss"])
    model.to(device).eval()
    loss.to(device)
    return model, loss, config
