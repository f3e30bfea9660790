"""Recipes whose protocol has its own runner are dispatched to it by `deepmetric train`."""

import subprocess
import sys
from pathlib import Path

from deepmetric.cli import _recipe_runner

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def test_runner_header_detection(tmp_path):
    assert _recipe_runner(RECIPES / "reid_mars.yaml") == "deepmetric.experiments.video_reid"
    assert _recipe_runner(RECIPES / "demo_omniglot.yaml") is None
    fake = tmp_path / "x.yaml"
    fake.write_text("# desc\n# Runner: python -m os.path x\nseed: 0\n")
    assert _recipe_runner(fake) is None  # only deepmetric's own experiment modules


def test_train_on_a_reid_recipe_reaches_the_reid_runner(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "deepmetric.cli", "train", str(RECIPES / "reid_mars.yaml"),
         f"data.root={tmp_path / 'missing'}", "--out", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode != 0
    assert "video_reid" in result.stderr and "missing" in result.stderr and "Traceback" not in result.stderr
