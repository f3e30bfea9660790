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
    def initial(self) -> Path:
        """The step-0 weights (written when ``finetune.wise_alphas`` is set)."""
        return self.checkpoints / "initial.pt"

    @property
    def wise(self) -> Path:
        """The WiSE-FT weights that gave the test metrics (``finetune.wise_alphas``)."""
        return self.checkpoints / "wise.pt"

    @property
    def test_embeddings(self) -> Path:
        return self.root / "test_embeddings.npz"


def _builder_params(name: str) -> set[str]:
    import inspect

    from deepmetric.models.registry import MODELS

    return set(inspect.signature(MODELS.resolve(name)).parameters)


def load_trained(
    run_dir: str | Path, which: str = "best", device: str | torch.device = "cpu",
    model: nn.Module | None = None, loss: nn.Module | None = None, with_loss: bool = True,
) -> tuple[nn.Module, nn.Module | None, Any]:
    """(model, loss, config) of a finished or interrupted run, weights from ``checkpoints/<which>.pt``,
    model in eval mode. The model is rebuilt from the run's ``config.yaml`` without downloading
    anything (its pretrained weights are replaced by the checkpoint's). ``model`` / ``loss``: objects
    to load the weights into instead (a run trained with ``fit(model=...)`` whose class cannot be
    rebuilt here; the error says so). ``with_loss=False``: the loss is neither rebuilt nor returned
    (None), for callers that only embed."""
    from deepmetric.config import load_config
    from deepmetric.models.contracts import trained_outputs
    from deepmetric.training.builders import build_loss_from_config, embedding_dim_of
    from deepmetric.training.checkpoint import load_checkpoint

    paths = RunPaths(Path(run_dir))
    config = load_config(paths.config)
    state = load_checkpoint(paths.checkpoints / f"{which}.pt", map_location=device)
    model = model if model is not None else _rebuild(paths, config, "model", lambda: _rebuild_model(config))
    _load_part(paths, model, state["model"], "model")
    model.to(device).eval()
    if not with_loss:
        return model, None, config
    loss = loss if loss is not None else _rebuild(
        paths, config, "loss",
        lambda: build_loss_from_config(config.loss, int(state["num_classes"]), embedding_dim_of(model),
                                       outputs=trained_outputs(model)))
    _load_part(paths, loss, state["loss"], "loss")
    loss.to(device)
    return model, loss, config


def _rebuild_model(config: Any) -> nn.Module:
    """The run's model with its architecture from the config and no pretrained weights read."""
    from deepmetric.config import load_config
    from deepmetric.training.builders import build_model, resolved_freeze_bn

    # the checkpoint replaces every weight, so never read (or download) pretrained weights here;
    # keep the BatchNorm behaviour the run trained with
    accepted = _builder_params(config.model.name)
    overrides = ["model.init_from=null"]
    if "pretrained" in accepted:
        overrides.append("model.pretrained=false")
        if "freeze_bn" in accepted:
            overrides.append(f"model.freeze_bn={str(resolved_freeze_bn(config.model)).lower()}")
    return build_model(load_config(config, overrides))


def _rebuild(paths: RunPaths, config: Any, section: str, build: Any) -> nn.Module:
    """``build()``; a failure for a part the run got as an object names what to import or pass."""
    from deepmetric.errors import ConfigError
    from deepmetric.training.parts import rebuild_hint

    try:
        return build()
    except (ConfigError, TypeError, ValueError) as exc:
        hint = rebuild_hint(paths.root, section, str(exc).split("\n")[0])
        if hint is None:
            raise
        raise ConfigError(hint) from None


def _load_part(paths: RunPaths, part: nn.Module, weights: dict[str, Any], section: str) -> None:
    from deepmetric.errors import ConfigError
    from deepmetric.training.parts import rebuild_hint

    try:
        part.load_state_dict(weights)
    except RuntimeError as exc:
        hint = rebuild_hint(paths.root, section, "its weights do not fit the rebuilt object: "
                            + str(exc).strip().split("\n")[0])
        if hint is None:
            raise
        raise ConfigError(hint) from None
