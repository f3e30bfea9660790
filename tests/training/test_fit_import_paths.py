"""Your own parts by import path: a model named package.module:Name trains like a registered one."""

from __future__ import annotations

import pytest

from deepmetric.errors import ConfigError
from deepmetric.training import fit
from toy_training import toy_config, toy_registries  # noqa: F401  (fixture)


def test_fit_accepts_a_model_named_by_import_path_and_rejects_heads_on_one_output(tmp_path, toy_registries) -> None:
    by_name = fit(toy_config("trainer.steps=2"), tmp_path / "a", progress=False, report=False)
    by_path = fit(toy_config("trainer.steps=2", "model.name=toy_training:tiny_model"), tmp_path / "b",
                  progress=False, report=False)
    assert by_name["test"] == by_path["test"]
    with pytest.raises(ConfigError, match="single output"):
        fit(toy_config("trainer.steps=2", "loss.heads={frame: 1.0}"), tmp_path / "c", progress=False, report=False)



def test_a_pytorch_metric_learning_loss_by_import_path_trains(tmp_path, toy_registries) -> None:
    pml = pytest.importorskip("pytorch_metric_learning.losses")
    import torch

    summary = fit(toy_config("trainer.steps=3", "loss.name=pytorch_metric_learning.losses:TripletMarginLoss",
                             "loss.params={margin: 0.2}"), tmp_path / "pml", progress=False, report=False)
    assert summary["steps"] == 3 and summary["test"] is not None
    losses = [float(r.split(",")[2]) for r in (tmp_path / "pml" / "log.csv").read_text().splitlines()[1:]]
    assert losses and all(0.0 <= v < 10.0 for v in losses)  # a margin loss on unit embeddings is bounded
    state = torch.load(tmp_path / "pml" / "checkpoints" / "last.pt", weights_only=True)
    from deepmetric.training.builders import build_model

    initial = build_model(toy_config()).state_dict()
    assert any(not torch.equal(initial[k], state["model"][k]) for k in initial)  # the PML loss trained it
    assert pml.TripletMarginLoss is not None
