"""A run folder and a command line a user can trust: locks, signals, resume, leftovers, errors.

The trainings here use the toy dataset and model of tests/training/toy_training.py, named by
import path so that subprocesses (real signals, real concurrent writers) can load them too.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from deepmetric.cli import main
from deepmetric.training.run_lock import RunLock

TOY_DIR = Path(__file__).resolve().parents[1] / "training"


def toy_recipe(tmp_path: Path, steps: int = 6, **extra: object) -> Path:
    recipe = {
        "seed": 3, "device": "cpu",
        "data": {"name": "toy_training:toy_dataset", "num_workers": 0, "val_fraction": 0.25},
        "sampler": {"p": 3, "k": 3},
        "model": {"name": "toy_training:tiny_model", "embedding_dim": 8},
        "loss": {"name": "contrastive"},
        "optimizer": {"name": "sgd", "lr": 0.05},
        "scheduler": {"name": "cosine", "warmup_steps": 2},
        "trainer": {"steps": steps, "eval_every": 3, "checkpoint_every": 1, "log_every": 1},
        "eval": {"select_metric": "map@r", "batch_size": 16, "k_values": [1]},
        **extra,
    }
    path = tmp_path / "toy.yaml"
    path.write_text("# toy recipe\n" + yaml.safe_dump(recipe), encoding="utf-8")
    return path


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(TOY_DIR), os.environ.get("PYTHONPATH", "")]),
            "OMP_NUM_THREADS": "1"}


@pytest.fixture(autouse=True)
def _toy_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(TOY_DIR))


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_overrides_after_options_and_debug_after_the_command(tmp_path: Path, capsys) -> None:
    recipe = toy_recipe(tmp_path)
    code, _, err = run_cli(["train", str(recipe), "--out", str(tmp_path / "r"), "--no-progress",
                            "trainer.steps=2", "--debug"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["steps"] == 2


def test_resume_without_recipe_uses_the_run_config_and_says_so(tmp_path: Path, capsys) -> None:
    recipe = toy_recipe(tmp_path, steps=3)
    out = tmp_path / "r"
    assert run_cli(["train", str(recipe), "--out", str(out), "--no-progress"], capsys)[0] == 0
    code, _, err = run_cli(["train", "--resume", "--out", str(out), "--no-progress", "trainer.steps=5"], capsys)
    assert code == 0, err
    assert f"resuming {out} from step 3 of 5" in err and "trainer.steps 3 -> 5" in err
    assert yaml.safe_load((out / "config.yaml").read_text())["trainer"]["steps"] == 5  # the change is saved
    code, _, err = run_cli(["train", "--resume", "--out", str(out), "optimizer.lr=0.5"], capsys)
    last = err.strip().splitlines()[-1]
    assert code == 1 and "error" in last and "optimizer.lr" in last and "Traceback" not in err


def test_resume_without_config_yaml_is_refused(tmp_path: Path, capsys) -> None:
    recipe = toy_recipe(tmp_path, steps=2)
    out = tmp_path / "r"
    assert run_cli(["train", str(recipe), "--out", str(out), "--no-progress"], capsys)[0] == 0
    (out / "config.yaml").unlink()
    code, _, err = run_cli(["train", str(recipe), "--resume", "--out", str(out)], capsys)
    assert code == 1 and "config.yaml" in err and "Traceback" not in err


def test_a_failed_start_leaves_no_run_folder(tmp_path: Path, capsys) -> None:
    recipe = toy_recipe(tmp_path)
    code, _, err = run_cli(["train", str(recipe), "--out", str(tmp_path / "r"), "sampler.p=50"], capsys)
    assert code == 1 and not (tmp_path / "r").exists(), err


def test_sigterm_finishes_the_step_saves_and_exits_143_then_resume_is_exact(tmp_path: Path) -> None:
    recipe = toy_recipe(tmp_path, steps=400, trainer={"steps": 400, "eval_every": 0, "checkpoint_every": 1000,
                                                      "log_every": 1})
    out = tmp_path / "r"
    proc = subprocess.Popen([sys.executable, "-m", "deepmetric.cli", "train", str(recipe), "--out", str(out),
                             "--no-progress"], env=env(), stderr=subprocess.PIPE, text=True)
    log = out / "log.csv"
    deadline = time.time() + 120
    while time.time() < deadline and (not log.is_file() or len(log.read_text().splitlines()) < 4):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "stopped by SIGTERM" in err and "Traceback" not in err
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert 0 < state["step"] < 400  # checkpoint_every is 1000: only the signal wrote this step
    rows = log.read_text().splitlines()[1:]
    assert int(rows[-1].split(",")[0]) == state["step"]  # log and checkpoint agree


def test_a_second_writer_fails_at_once_naming_the_holder(tmp_path: Path, capsys) -> None:
    recipe = toy_recipe(tmp_path)
    out = tmp_path / "r"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from deepmetric.training.run_lock import RunLock; "
         f"lock = RunLock(sys.argv[1]).acquire(); print('locked', flush=True); time.sleep(60)", str(out)],
        env=env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, _, err = run_cli(["train", str(recipe), "--out", str(out)], capsys)
        assert code == 1 and f"PID {holder.pid}" in err and "in use" in err
    finally:
        holder.kill()
        holder.wait()
    # the holder died without releasing: its lock is stale and taken over
    code, _, err = run_cli(["train", str(recipe), "--out", str(out), "--no-progress", "trainer.steps=1"], capsys)
    assert code == 0 and f"stale lock" in err and f"PID {holder.pid}" in err


def test_leftover_temporaries_are_removed_and_garbage_log_rows_dropped(tmp_path: Path, capsys) -> None:
    recipe = toy_recipe(tmp_path, steps=3)
    out = tmp_path / "r"
    assert run_cli(["train", str(recipe), "--out", str(out), "--no-progress"], capsys)[0] == 0
    (out / "checkpoints" / ".last.pt.abc123.tmp").write_bytes(b"partial")
    with (out / "log.csv").open("a") as fh:
        fh.write("garbage,row\n7,1,0.5,0.1,1.0\nnot-a-number,0,0,0,0\n")
    code, _, err = run_cli(["train", "--resume", "--out", str(out), "--no-progress", "trainer.steps=4"], capsys)
    assert code == 0, err
    assert not list((out / "checkpoints").glob("*.tmp"))
    steps = [int(r.split(",")[0]) for r in (out / "log.csv").read_text().splitlines()[1:]]
    assert steps == [1, 2, 3, 4]


def test_run_files_honour_the_umask(tmp_path: Path, capsys) -> None:
    recipe = toy_recipe(tmp_path, steps=1)
    out = tmp_path / "r"
    old = os.umask(0o022)
    try:
        assert run_cli(["train", str(recipe), "--out", str(out), "--no-progress"], capsys)[0] == 0
    finally:
        os.umask(old)
    for name in ("metrics.json", "config.yaml", "checkpoints/last.pt", "test_embeddings.npz", "log.csv"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o644, name


@pytest.mark.parametrize("failure", [
    RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file data/0: "
                 "file write failed"),
    OSError(28, "No space left on device"),
    PermissionError(13, "Permission denied"),
])
def test_disk_full_or_read_only_is_one_line_and_keeps_the_previous_checkpoint(
        tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch, failure: Exception) -> None:
    recipe = toy_recipe(tmp_path, steps=2)
    out = tmp_path / "r"
    assert run_cli(["train", str(recipe), "--out", str(out), "--no-progress"], capsys)[0] == 0
    before = (out / "checkpoints" / "last.pt").read_bytes()

    def failing_save(*args: object, **kwargs: object) -> None:
        raise failure

    monkeypatch.setattr(torch, "save", failing_save)
    code, _, err = run_cli(["train", "--resume", "--out", str(out), "--no-progress", "trainer.steps=4"], capsys)
    last = err.strip().splitlines()[-1]
    assert code == 1 and "cannot write checkpoint" in last and "Traceback" not in err
    assert (out / "checkpoints" / "last.pt").read_bytes() == before
    assert not list((out / "checkpoints").glob("*.tmp"))


def test_lock_object_reports_the_previous_holder(tmp_path: Path) -> None:
    (tmp_path / ".lock").write_text(json.dumps({"pid": 999999, "host": "elsewhere"}))
    with RunLock(tmp_path) as lock:
        assert lock.took_over == {"pid": 999999, "host": "elsewhere"}
    assert (tmp_path / ".lock").read_text() == ""  # released cleanly: nothing stale next time


def test_too_few_classes_after_validation_adapt_p_and_say_so(tmp_path: Path, capsys) -> None:
    recipe = toy_recipe(tmp_path)  # toy data: 8 training classes; val_fraction 0.25 carves 2 off
    code, _, err = run_cli(["train", str(recipe), "--out", str(tmp_path / "r"), "sampler.p=8", "sampler.k=3",
                            "--no-progress", "trainer.steps=2"], capsys)
    assert code == 0, err
    warning = next(line for line in err.splitlines() if "sampler.p=8" in line)
    assert "held 2 classes out" in warning and "leaving 6" in warning and "6 classes x 4 items" in warning
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert any("6 classes x 4 items" in w for w in metrics["warnings"])
    # without held-out classes nothing adapts silently: the error names the setting
    code, _, err = run_cli(["train", str(recipe), "--out", str(tmp_path / "s"), "sampler.p=9",
                            "data.val_fraction=0", "eval.split=test", "--no-progress", "trainer.steps=1"], capsys)
    last = err.strip().splitlines()[-1]
    assert code == 1 and "has 8 classes" in last and "sampler.p=8" in last and "Traceback" not in err


def toy_with_singles(split: str, transform: object = None) -> object:
    """Toy data where one training class and one test class hold a single item."""
    from toy_training import ToyDataset

    data = ToyDataset(list(range(8)) if split == "train" else list(range(8, 14)), 6, transform)
    last = max(data.labels)
    keep = [i for i, y in enumerate(data.labels) if y != last] + [data.labels.index(last)]
    data.items = [data.items[i] for i in keep]
    data.labels = [data.labels[i] for i in keep]
    data.paths = [data.paths[i] for i in keep]
    return data


def test_single_item_classes_are_warned_and_counted(tmp_path: Path, capsys) -> None:
    recipe = toy_recipe(tmp_path, steps=2)
    code, _, err = run_cli(["train", str(recipe), "--out", str(tmp_path / "r"), "--no-progress",
                            "data.name=test_trust:toy_with_singles", "data.val_by=items"], capsys)
    assert code == 0, err
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["counts"] == {"single_item_train_classes": 1, "single_item_test_classes": 1}
    assert "class7" in err and "class13" in err  # named in the warnings
    assert metrics["test"]["n_queries_excluded"] == 1
