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

