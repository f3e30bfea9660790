"""`deepmetric train --nproc 2` launches two processes that write one run folder."""

import json
import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_train_nproc_two_writes_one_run_folder(tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-m", "deepmetric.cli", "train", "demo_omniglot", "trainer.steps=2", "trainer.eval_every=2",
         "data.image_size=16", "eval.baseline=false", "--nproc", "2", "--out", str(out), "--no-progress"],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 2 and 0.0 <= metrics["test"]["recall@1"] <= 1.0
    assert (out / "checkpoints" / "last.pt").is_file() and (out / "report.html").is_file()
    assert result.stdout.count("run folder:") == 1  # only rank 0 reports


def test_torchrun_without_out_is_a_one_line_error(tmp_path):
    env = dict(os.environ, WORLD_SIZE="2", RANK="0")
    result = subprocess.run([sys.executable, "-m", "deepmetric.cli", "train", "demo_omniglot"],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120, check=False)
    assert result.returncode != 0 and "--out" in result.stderr and "Traceback" not in result.stderr
