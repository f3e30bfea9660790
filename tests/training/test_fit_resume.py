"""Reproducibility and exact resume of deepmetric.training.fit on a tiny CPU model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from deepmetric.errors import ConfigError
from deepmetric.training import fit, load_checkpoint
from toy_training import toy_config, toy_registries  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("toy_registries")


def _weights(run: Path, which: str = "last") -> dict[str, torch.Tensor]:
    state = load_checkpoint(run / "checkpoints" / f"{which}.pt")
    return {**{f"model.{k}": v for k, v in state["model"].items()}, **{f"loss.{k}": v for k, v in state["loss"].items()}}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_same_weights_and_metrics_different_seed_differs(tmp_path: Path) -> None:
    a = fit(toy_config(), tmp_path / "a", progress=False)
    b = fit(toy_config(), tmp_path / "b", progress=False)
    c = fit(toy_config("seed=4"), tmp_path / "c", progress=False)
    assert _same(_weights(tmp_path / "a"), _weights(tmp_path / "b"))
    assert a["evaluations"] == b["evaluations"] and a["test"] == b["test"]
    assert not _same(_weights(tmp_path / "a"), _weights(tmp_path / "c"))
    # training changed the weights at all: compare with the seeded initial model
    from deepmetric.training.builders import build_model
    from deepmetric.training.seed import seed_everything

    seed_everything(3)
    initial = {f"model.{k}": v for k, v in build_model(toy_config()).state_dict().items()}
    trained = {k: v for k, v in _weights(tmp_path / "a").items() if k.startswith("model.")}
    assert initial.keys() == trained.keys()
    assert not _same(initial, trained)


def test_resume_after_interrupt_equals_uninterrupted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """N steps, Ctrl-C (KeyboardInterrupt), resume for N more == 2N steps straight."""
    straight = fit(toy_config("trainer.steps=10"), tmp_path / "straight", progress=False)

    from deepmetric.training.fit import _Run

    original = _Run.train_step
    calls = {"n": 0}

    def interrupt_at_6(self, inputs, labels):  # type: ignore[no-untyped-def]
        if self.step == 5:
            raise KeyboardInterrupt
        calls["n"] += 1
        return original(self, inputs, labels)

    monkeypatch.setattr(_Run, "train_step", interrupt_at_6)
    with pytest.raises(KeyboardInterrupt):
        fit(toy_config("trainer.steps=10"), tmp_path / "resumed", progress=False)
    assert calls["n"] == 5
    assert load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")["step"] == 5
    monkeypatch.setattr(_Run, "train_step", original)
    resumed = fit(toy_config("trainer.steps=10"), tmp_path / "resumed", resume=True, progress=False)

    assert _same(_weights(tmp_path / "straight"), _weights(tmp_path / "resumed"))
    assert _same(_weights(tmp_path / "straight", "best"), _weights(tmp_path / "resumed", "best"))
    assert straight["evaluations"] == resumed["evaluations"]
    assert straight["test"] == resumed["test"] and straight["best"] == resumed["best"]
    s_opt = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")["optimizer"]["state"]
    r_opt = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")["optimizer"]["state"]
    assert all(torch.equal(s_opt[i]["momentum_buffer"], r_opt[i]["momentum_buffer"]) for i in s_opt)
    # the log of the resumed run has every logged step once
    log_steps = [int(line.split(",")[0]) for line in (tmp_path / "resumed" / "log.csv").read_text().splitlines()[1:]]
    assert log_steps == [2, 4, 6, 8, 10]


def test_extending_a_finished_run_equals_a_longer_run(tmp_path: Path) -> None:
    """Constant schedule: N steps, then resume with trainer.steps=2N == 2N steps (crosses epochs)."""
    fit(toy_config("trainer.steps=14", "scheduler.name=none"), tmp_path / "long", progress=False)
    fit(toy_config("trainer.steps=7", "scheduler.name=none"), tmp_path / "ext", progress=False)
    fit(toy_config("trainer.steps=14", "scheduler.name=none"), tmp_path / "ext", resume=True, progress=False)
    assert _same(_weights(tmp_path / "long"), _weights(tmp_path / "ext"))


def test_resume_guards(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        fit(toy_config(), tmp_path / "none", resume=True, progress=False)
    fit(toy_config("trainer.steps=2"), tmp_path / "r", progress=False)
    with pytest.raises(ConfigError, match="already holds a checkpoint"):
        fit(toy_config("trainer.steps=2"), tmp_path / "r", progress=False)
    with pytest.raises(ConfigError, match="optimizer.lr"):
        fit(toy_config("trainer.steps=4", "optimizer.lr=0.1"), tmp_path / "r", resume=True, progress=False)


def test_worker_processes_do_not_change_the_result(tmp_path: Path) -> None:
    """Item augmentation is seeded per item, so 0 or 2 loader workers train the same weights."""
    fit(toy_config("data.num_workers=0", "trainer.steps=4"), tmp_path / "w0", progress=False)
    fit(toy_config("data.num_workers=2", "trainer.steps=4"), tmp_path / "w2", progress=False)
    assert _same(_weights(tmp_path / "w0"), _weights(tmp_path / "w2"))


def test_fit_leaves_the_process_determinism_settings_as_they_were(tmp_path: Path) -> None:
    import torch.utils.deterministic as det

    before = (torch.are_deterministic_algorithms_enabled(), det.fill_uninitialized_memory)
    fit(toy_config("trainer.steps=1"), tmp_path / "r", progress=False, report=False)
    assert (torch.are_deterministic_algorithms_enabled(), det.fill_uninitialized_memory) == before
