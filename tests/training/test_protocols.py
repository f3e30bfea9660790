"""Run protocols: k-fold and repeated-split planning, summary.json statistics, skip / resume of
sub-runs, and an exact resume after SIGKILL in the middle of a fold (``deepmetric train``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from deepmetric.config import Config, load_config
from deepmetric.errors import ConfigError
from deepmetric.run_files import read_metrics, read_summary
from deepmetric.training import load_checkpoint
from deepmetric.training.protocols import plan_protocol, run_protocol, sub_run_finished
from toy_fold_data import N_CLASSES, PER_CLASS, toy_fold_dataset
from toy_training import toy_config, toy_registries  # noqa: F401  (fixture)

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

#: the toy fold loader and model, by import path (a subprocess finds them with PYTHONPATH=HERE)
FOLD_DATA = ["data.name=toy_fold_data:toy_fold_dataset", "model.name=toy_training:tiny_model"]


def fold_config(*overrides: str) -> Config:
    """The toy training config on the fold loader, closed-set classification, 3 folds."""
    return toy_config(*FOLD_DATA, "data.val_by=items", "loss.ce_weight=1", "eval.protocol=classification",
                      "eval.select_metric=accuracy", "eval.k_values=[1]", "eval.metrics=[recall@k, map@r, nmi]",
                      "protocol.name=kfold", "protocol.folds=3", *overrides)


# ------------------------------------------------------------------------------------ planning


def test_kfold_plans_k_sub_runs_whose_test_folds_partition_the_data(tmp_path: Path) -> None:
    plan = plan_protocol(fold_config("protocol.split_seed=11"), tmp_path)
    assert [s.name for s in plan] == ["fold_0", "fold_1", "fold_2"]
    assert [s.params for s in plan] == [{"fold": 0}, {"fold": 1}, {"fold": 2}]
    everything = [f"item_{i}.npy" for i in range(N_CLASSES * PER_CLASS)]
    seen: Counter[str] = Counter()
    for k, sub in enumerate(plan):
        assert sub.config.data.params == {"fold": k, "n_folds": 3, "split_seed": 11}
        assert sub.config.protocol.name == "kfold" and sub.config.seed == 3  # same run seed for every fold
        test = toy_fold_dataset("test", **sub.config.data.params)
        train = toy_fold_dataset("train", **sub.config.data.params)
        # train is exactly the complement of the test fold
        assert sorted(train.paths + test.paths) == sorted(everything)
        assert not set(train.paths) & set(test.paths)
        # stratified: every class has PER_CLASS / 3 items in every test fold
        for c in range(N_CLASSES):
            assert sum(1 for y in test.labels if y == c) == PER_CLASS // 3
        for path in test.paths:
            seen[path] += 1
    # the test folds partition the data: every item is tested exactly once
    assert sorted(seen) == sorted(everything)
    assert all(seen[path] == 1 for path in everything)
    # the run seed is the split seed by default, and another seed moves items between folds
    default = plan_protocol(fold_config(), tmp_path)
    assert default[0].config.data.params["split_seed"] == 3
    assert toy_fold_dataset("test", fold=0, n_folds=3, split_seed=3).paths != \
        toy_fold_dataset("test", fold=0, n_folds=3, split_seed=11).paths


@pytest.mark.usefixtures("toy_registries")
def test_kfold_refuses_a_loader_without_folds(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="kfold needs a dataset loader with the parameters fold") as err:
        plan_protocol(toy_config("protocol.name=kfold"), tmp_path)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("protocol", ["kfold", "repeated_splits"])
@pytest.mark.parametrize("eval_protocol", ["classification", "diagnostic"])
def test_closed_set_evaluation_needs_validation_by_items(tmp_path: Path, protocol: str, eval_protocol: str) -> None:
    config = fold_config(f"protocol.name={protocol}", f"eval.protocol={eval_protocol}", "data.val_by=classes")
    with pytest.raises(ConfigError, match="set data.val_by=items") as err:
        plan_protocol(config, tmp_path)
    assert "\n" not in str(err.value)
    # without a validation split there is nothing to carve, so val_by does not matter
    no_val = fold_config(f"protocol.name={protocol}", f"eval.protocol={eval_protocol}", "data.val_by=classes",
                         "data.val_fraction=0", "eval.split=test")
    assert len(plan_protocol(no_val, tmp_path)) >= 1


def test_repeated_splits_seed_the_run_and_the_split(tmp_path: Path) -> None:
    config = fold_config("protocol.name=repeated_splits", "protocol.repeats=3", "protocol.test_fraction=0.3")
    plan = plan_protocol(config, tmp_path)
    assert [s.name for s in plan] == ["split_0", "split_1", "split_2"]
    for r, sub in enumerate(plan):
        assert sub.params == {"split": r, "seed": 3 + r} and sub.config.seed == 3 + r
        assert sub.config.data.params == {"test_fraction": 0.3, "split_seed": 3 + r}
    # folder and csv split every class (split_by=items) with the split seed; scene_folder by its seed
    for name, expected in (("folder", {"split_by": "items", "split_seed": 3}),
                           ("csv", {"split_by": "items", "split_seed": 3}),
                           ("scene_folder", {"split_seed": 3})):
        sub = plan_protocol(fold_config("protocol.name=repeated_splits", f"data.name={name}"), tmp_path)[0]
        assert sub.config.data.params == {"test_fraction": 0.2, **expected}, name


@pytest.mark.usefixtures("toy_registries")
def test_repeated_splits_refuse_a_loader_without_a_split_seed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="repeated_splits needs a loader"):
        plan_protocol(toy_config("protocol.name=repeated_splits"), tmp_path)


# ------------------------------------------------------------------------------------ loaders with folds


def _image_folder(root: Path, counts: dict[str, int]) -> Path:
    from PIL import Image

    for name, n in counts.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (4, 4), (i, 0, 0)).save(root / name / f"{i:02d}.png")
    return root


def test_folder_and_csv_loaders_cut_the_same_stratified_folds(tmp_path: Path) -> None:
    from deepmetric.data.folder import folder_dataset
    from deepmetric.data.manifest import csv_dataset
    from deepmetric.data.splits import stratified_folds

    counts = {"cat": 6, "dog": 4, "owl": 5}
    root = _image_folder(tmp_path / "images", counts)
    manifest = root / "images.csv"  # paths relative to the CSV's folder
    rows = [f"{name}/{i:02d}.png,{name}" for name, n in counts.items() for i in range(n)]
    manifest.write_text("path,label\n" + "\n".join(rows) + "\n", encoding="utf-8")
    names = [name for name, n in counts.items() for _ in range(n)]
    everything = sorted(str(tmp_path / "images" / row.split(",")[0]) for row in rows)
    for load in (lambda **kw: folder_dataset(root, **kw), lambda **kw: csv_dataset(manifest, **kw)):
        tested: list[str] = []
        for k in range(4):
            test = load(split="test", fold=k, n_folds=4, split_seed=5)
            train = load(split="train", fold=k, n_folds=4, split_seed=5)
            assert sorted(map(str, test.paths + train.paths)) == everything
            assert train.class_names == test.class_names == ["cat", "dog", "owl"]  # every class on both sides
            expected = sorted(str(tmp_path / "images" / rows[i].split(",")[0]) for i in stratified_folds(names, 4, 5)[k])
            assert sorted(map(str, test.paths)) == expected
            tested += list(map(str, test.paths))
        assert sorted(tested) == everything  # each image in exactly one test fold
    with pytest.raises(ConfigError, match="0..3"):
        folder_dataset(root, split="test", fold=4, n_folds=4)
    # fixed splits refuse folds and split seeds in one line
    fixed = tmp_path / "fixed"
    _image_folder(fixed / "train", {"a": 2, "b": 2})
    _image_folder(fixed / "test", {"a": 2, "b": 2})
    with pytest.raises(ConfigError, match="fixed train/ and test/"):
        folder_dataset(fixed, split="test", fold=0, n_folds=2)
    with pytest.raises(ConfigError, match="fixed train/ and test/"):
        folder_dataset(fixed, split="test", split_seed=1)
    split_manifest = tmp_path / "split.csv"
    split_manifest.write_text("path,label,split\ncat/00.png,cat,train\ncat/01.png,cat,test\n", encoding="utf-8")
    (tmp_path / "cat").mkdir()
    with pytest.raises(ConfigError, match="'split' column"):
        csv_dataset(split_manifest, split="test", fold=0, n_folds=2)


# ------------------------------------------------------------------------------------ running


def _test_metrics(folder: Path) -> dict[str, float | None]:
    test = read_metrics(folder).test
    assert test is not None, folder
    return test


def test_summary_statistics_skip_finished_folds_and_refuse_a_second_run(tmp_path: Path) -> None:
    config = fold_config("trainer.steps=6", "trainer.eval_every=3")
    out = tmp_path / "cv"
    returned = run_protocol(config, out, progress=False, report=False)
    summary = read_summary(out)
    assert summary.protocol == "kfold" and [r.name for r in summary.runs] == ["fold_0", "fold_1", "fold_2"]
    assert returned["groups"]["all"]["accuracy"]["mean"] == summary.groups["all"]["accuracy"].mean
    per_fold = [_test_metrics(out / f"fold_{k}") for k in range(3)]
    assert set(summary.groups["all"]) == set(per_fold[0])
    for name, stat in summary.groups["all"].items():
        values = [m[name] for m in per_fold]
        assert stat.values == values, name
        finite = [float(v) for v in values if v is not None and np.isfinite(v)]
        assert stat.n == len(finite)
        assert stat.mean == pytest.approx(np.mean(finite), rel=1e-12, abs=1e-12), name
        assert stat.std == pytest.approx(np.std(finite, ddof=1), rel=1e-12, abs=1e-12), name
    # the classification heads are there, per fold
    assert {"accuracy/softmax", "accuracy/knn", "accuracy"} <= set(per_fold[0])
    assert per_fold[0]["accuracy"] == per_fold[0]["accuracy/softmax"]

    # resuming a finished protocol trains nothing: no checkpoint or metrics file is rewritten
    stamps = {p: p.stat().st_mtime_ns for k in range(3)
              for p in (out / f"fold_{k}" / "checkpoints" / "last.pt", out / f"fold_{k}" / "metrics.json")}
    again = run_protocol(config, out, resume=True, progress=False, report=False)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert again["groups"] == returned["groups"]

    # running into the same folder without resume is a one-line error that says what to do
    with pytest.raises(ConfigError, match="--resume") as err:
        run_protocol(config, out, progress=False, report=False)
    assert "\n" not in str(err.value)
    # resuming with another config is refused too
    with pytest.raises(ConfigError, match="optimizer.lr"):
        run_protocol(fold_config("trainer.steps=6", "trainer.eval_every=3", "optimizer.lr=0.01"), out, resume=True,
                     progress=False, report=False)


# ------------------------------------------------------------------------------------ SIGKILL


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "checkpoints" / "last.pt")["model"]


def _log_rows(run: Path) -> int:
    log = run / "log.csv"
    return max(0, len(log.read_text().splitlines()) - 1) if log.is_file() else 0


def _cli(recipe: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "deepmetric.cli", "train", str(recipe), *KILL_OVERRIDES, "--out", str(out),
            "--threads", "1", "--no-progress", *extra]


#: the protocol of the killed run, given on the command line as the brief says
KILL_OVERRIDES = ["protocol.name=kfold", "protocol.folds=3"]


def _env(**extra: str) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", **extra}


@pytest.mark.slow
def test_sigkill_in_fold_2_then_resume_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    # a recipe file without a protocol: kfold comes from the command line
    recipe_config = fold_config("trainer.steps=40", "trainer.eval_every=10", "trainer.checkpoint_every=4",
                                "trainer.log_every=2", "protocol.name=single")
    recipe = tmp_path / "toy_kfold.yaml"
    data: dict[str, Any] = recipe_config.to_dict()
    del data["protocol"]
    recipe.write_text(yaml.safe_dump(data), encoding="utf-8")
    out = tmp_path / "killed"
    fold_1 = out / "fold_1"

    # 1. train, slowed down (item reads sleep, no number changes), and SIGKILL it in the middle of
    #    fold_1: its last.pt exists, a few steps are logged, and its test metrics are not written
    log = (tmp_path / "killed.log").open("w")
    proc = subprocess.Popen(_cli(recipe, out), cwd=REPO, env=_env(TOY_FOLD_DELAY="0.004"), stdout=log,
                            stderr=subprocess.STDOUT)
    killed = False
    deadline = time.monotonic() + 300
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if (fold_1 / "checkpoints" / "last.pt").is_file() and _log_rows(fold_1) >= 3 \
                    and not sub_run_finished(fold_1):
                os.kill(proc.pid, signal.SIGKILL)
                killed = True
                break
            time.sleep(0.01)
    finally:
        if proc.poll() is None and not killed:
            proc.kill()
        proc.wait(timeout=60)
        log.close()
    assert killed, "the run ended (or timed out) before fold_1 was under way:\n" + (tmp_path / "killed.log").read_text()[-3000:]
    assert proc.returncode == -signal.SIGKILL
    assert sub_run_finished(out / "fold_0") and not sub_run_finished(fold_1)
    step = int(load_checkpoint(fold_1 / "checkpoints" / "last.pt")["step"])
    assert 0 < step < 40, step  # killed in the middle of the fold, not at its start or end
    assert not (out / "fold_2").exists()

    # 2. the same command again without --resume is refused; with --resume it finishes
    refused = subprocess.run(_cli(recipe, out), cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert refused.returncode == 1 and "--resume" in refused.stderr
    resumed = subprocess.run(_cli(recipe, out, "--resume"), cwd=REPO, env=_env(), capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "fold_0: finished, skipped" in resumed.stderr and "fold_1: resuming" in resumed.stderr

    # 3. an uninterrupted run of the same recipe (in this process: one thread, like --threads 1)
    straight = tmp_path / "straight"
    run_protocol(load_config(recipe, KILL_OVERRIDES), straight, progress=False, report=False)

    for k in range(3):
        a, b = _weights(straight / f"fold_{k}"), _weights(out / f"fold_{k}")
        assert a.keys() == b.keys()
        for name in a:
            assert torch.equal(a[name], b[name]), (k, name)
        assert read_metrics(out / f"fold_{k}").test == read_metrics(straight / f"fold_{k}").test, k
        assert read_metrics(out / f"fold_{k}").test_step == read_metrics(straight / f"fold_{k}").test_step, k
    assert read_summary(out).groups == read_summary(straight).groups
