"""The prepared GPU check runs on a CPU-only machine too, saying what it skipped."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_runs_without_a_gpu_and_says_what_it_skipped() -> None:
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--quick"], capture_output=True,
                          text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    for section in ("## 1. CUDA tests", "## 2. Training throughput", "## 3. Exact k-NN", "## 4. Export on CUDA"):
        assert section in out
    assert "| setting" in out and "| path" in out and "Traceback" not in proc.stderr
    if not torch.cuda.is_available():
        assert out.count("skipped") >= 3 and "no CUDA device" in out
    else:  # pragma: no cover - on a GPU machine the GPU rows are there
        assert "| cuda" in out
