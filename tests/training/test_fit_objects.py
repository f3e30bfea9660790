"""fit(config, run_dir, model=..., loss=...): your own objects train, the run folder records them,
and a new process rebuilds the run, or says exactly what to import or pass."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from toy_training import DIM, TinyNet, toy_config, toy_registries  # noqa: F401  (fixture)

from deepmetric.errors import ConfigError
from deepmetric.losses.contrastive import ContrastiveLoss
from deepmetric.training import fit, load_trained
from deepmetric.training.seed import seed_everything

TESTS = Path(__file__).resolve().parent


def _weights(path: Path) -> dict[str, Tensor]:
    return torch.load(path, weights_only=True)["model"]


def test_objects_train_exactly_like_the_named_parts_and_are_recorded(tmp_path, toy_registries) -> None:
    config = toy_config("trainer.steps=6")
    named = fit(config, tmp_path / "named", progress=False, report=False)
    seed_everything(config.seed)  # what fit does right before building the named model
    model = TinyNet(8, 0.1)
    objects = fit(config, tmp_path / "objects", progress=False, report=False, model=model, loss=ContrastiveLoss())
    assert objects["test"] == named["test"]
    a, b = _weights(tmp_path / "named/checkpoints/last.pt"), _weights(tmp_path / "objects/checkpoints/last.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the object itself was trained (not a copy): it ends holding the weights fit chose (best.pt)
    chosen = _weights(tmp_path / "objects/checkpoints/best.pt")
    assert all(torch.equal(model.state_dict()[k].cpu(), chosen[k]) for k in chosen)

    saved = (tmp_path / "objects/config.yaml").read_text()
    assert "name: toy_training:TinyNet" in saved and "name: deepmetric.losses.contrastive:ContrastiveLoss" in saved
    parts = json.loads((tmp_path / "objects/parts.json").read_text())
    assert parts["model"]["params"] == {"embedding_dim": 8} and parts["model"]["not_recorded"] == ["dropout"]
    assert parts["model"]["importable"] is True
    assert any("dropout" in w for w in objects["warnings"])  # said at training time, kept in metrics.json
    assert not (tmp_path / "named/parts.json").exists()

    # this process can import the class: the run rebuilds from its config alone
    rebuilt, loss, _ = load_trained(tmp_path / "objects", which="last")
    assert isinstance(rebuilt, TinyNet) and isinstance(loss, ContrastiveLoss)
    assert all(torch.equal(rebuilt.state_dict()[k], b[k]) for k in b)


def test_resume_with_the_same_objects_is_exact(tmp_path, toy_registries) -> None:
    def objects() -> tuple[nn.Module, nn.Module]:
        seed_everything(5)
        return TinyNet(8, 0.1), ContrastiveLoss(pos_margin=0.1)

    model, loss = objects()
    constant = "scheduler.name=none"  # the cosine schedule depends on trainer.steps
    fit(toy_config("trainer.steps=8", constant), tmp_path / "once", progress=False, report=False,
        model=model, loss=loss)
    model, loss = objects()
    fit(toy_config("trainer.steps=4", constant), tmp_path / "twice", progress=False, report=False,
        model=model, loss=loss)
    model, loss = objects()
    fit(toy_config("trainer.steps=8", constant), tmp_path / "twice", resume=True, progress=False, report=False,
        model=model, loss=loss)
    a, b = _weights(tmp_path / "once/checkpoints/last.pt"), _weights(tmp_path / "twice/checkpoints/last.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert "pos_margin: 0.1" in (tmp_path / "twice/config.yaml").read_text()


def _load_in_new_process(run: Path, pythonpath: str) -> subprocess.CompletedProcess[str]:
    code = ("import sys\nfrom deepmetric.errors import DeepMetricError\nfrom deepmetric.training import load_trained\n"
            f"try:\n    load_trained({str(run)!r}, which='last')\nexcept DeepMetricError as exc:\n"
            "    print(exc); sys.exit(3)\nprint('rebuilt')")
    env = {**os.environ, "PYTHONPATH": pythonpath}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120, check=False)


def test_a_new_process_rebuilds_the_run_or_says_what_to_import(tmp_path, toy_registries) -> None:
    fit(toy_config("trainer.steps=2"), tmp_path / "run", progress=False, report=False, model=TinyNet(8))
    found = _load_in_new_process(tmp_path / "run", str(TESTS))
    assert found.returncode == 0 and "rebuilt" in found.stdout, found.stderr
    missing = _load_in_new_process(tmp_path / "run", "")
    assert missing.returncode == 3 and "Traceback" not in missing.stderr
    line = missing.stdout.strip()
    assert "\n" not in line and "toy_training:TinyNet" in line
    assert "deepmetric.load(" in line and "model=TinyNet(" in line


def test_a_class_defined_in_a_function_trains_warns_and_loads_when_passed_back(tmp_path, toy_registries) -> None:
    class Local(nn.Module):
        def __init__(self, width: int) -> None:
            super().__init__()
            self.width = width
            self.layer = nn.Linear(DIM, width)
            self.embedding_dim = width

        def forward(self, x: Tensor) -> Tensor:
            return nn.functional.normalize(self.layer(x), dim=1)

    summary = fit(toy_config("trainer.steps=2"), tmp_path / "run", progress=False, report=False, model=Local(6))
    assert any("cannot be imported from another process" in w for w in summary["warnings"])
    with pytest.raises(ConfigError, match=r"fit\(model=\.\.\.\).*Local\("):
        load_trained(tmp_path / "run", which="last")
    model, _, _ = load_trained(tmp_path / "run", which="last", model=Local(6), with_loss=False)
    saved = _weights(tmp_path / "run/checkpoints/last.pt")
    assert all(torch.equal(model.state_dict()[k], saved[k]) for k in saved)
    with pytest.raises(ConfigError, match="do not fit"):  # a different architecture: named, not a raw error
        load_trained(tmp_path / "run", which="last", model=Local(5), with_loss=False)


def test_a_pytorch_metric_learning_loss_object_trains(tmp_path, toy_registries) -> None:
    pml = pytest.importorskip("pytorch_metric_learning.losses")
    summary = fit(toy_config("trainer.steps=3"), tmp_path / "pml", progress=False, report=False,
                  loss=pml.TripletMarginLoss(margin=0.3))
    assert summary["steps"] == 3
    saved = (tmp_path / "pml/config.yaml").read_text()
    assert "TripletMarginLoss" in saved and "margin: 0.3" in saved


def test_bad_objects_get_one_line_errors(tmp_path, toy_registries) -> None:
    with pytest.raises(ConfigError, match="takes a torch.nn.Module"):
        fit(toy_config(), tmp_path / "a", progress=False, report=False, model="tiny")  # type: ignore[arg-type]
    assert not (tmp_path / "a").exists()
