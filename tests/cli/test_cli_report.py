"""Report generation on a fake run folder (no training needed)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepmetric.errors import DataError
from deepmetric.evaluation import plots
from deepmetric.evaluation.report import finite_metrics, write_report

EXPECTED = {"loss.png", "metrics.png", "recall_at_k.png", "projection.png", "retrieval.png",
            "verification_roc.png", "verification_pr.png"}


def fit_shaped(run: Path) -> Path:
    """Give the fake run's metrics.json every key that ``fit`` writes (the schema is strict)."""
    path = run / "metrics.json"
    metrics = json.loads(path.read_text(encoding="utf-8"))
    metrics["test"] = {k: v for k, v in metrics["test"].items() if k not in ("confusion_matrix", "class_names")}
    metrics.update({"selection_split": "val", "steps": 200, "total_steps": 200, "stopped_early": False,
                    "test_step": 200})
    path.write_text(json.dumps(metrics), encoding="utf-8")
    return run


@pytest.fixture
def fit_run(fake_run: Path) -> Path:
    return fit_shaped(fake_run)


def test_report_writes_every_plot_and_references_them(fit_run: Path) -> None:
    fake_run = fit_run
    html_path = write_report(fake_run)
    assert html_path == fake_run / "report.html"
    made = {p.name for p in (fake_run / "plots").glob("*.png")}
    assert made == EXPECTED  # no confusion matrix: not a classification run
    html = html_path.read_text(encoding="utf-8")
    referenced = set(re.findall(r"src='plots/([^']+)'", html))
    assert referenced == EXPECTED
    for name in EXPECTED:
        with Image.open(fake_run / "plots" / name) as img:
            assert img.size[0] > 200 and img.size[1] > 150
    # the summary table shows untrained vs trained and the change of Recall@1 (0.3 -> 0.8)
    assert "0.3000" in html and "0.8000" in html and "+0.5000" in html


def test_confusion_matrix_for_classification_runs(tmp_path: Path, make_run) -> None:
    run = fit_shaped(make_run(tmp_path))
    np.savez(run / "test_predictions.npz", labels=np.array([0, 0, 0, 0, 1, 1, 1, 1]),
             predictions=np.array([0, 0, 0, 1, 1, 1, 1, 1]), class_names=np.array(["cat", "dog"]))
    html = write_report(run).read_text(encoding="utf-8")
    assert (run / "plots" / "confusion_matrix.png").is_file()
    assert "plots/confusion_matrix.png" in html
    assert "<td>cat</td><td>4</td><td>3</td><td>0.7500</td>" in html  # per-class table by name


def test_partial_run_folder_lists_what_is_missing(tmp_path: Path) -> None:
    run = tmp_path / "r"
    run.mkdir()
    (run / "config.yaml").write_text("seed: 1\n")
    html = write_report(run).read_text(encoding="utf-8")
    assert "No test metrics yet" in html and "loss curve skipped" in html
    assert not list((run / "plots").glob("*.png")) if (run / "plots").exists() else True


def test_missing_run_folder_and_corrupt_metrics(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        write_report(tmp_path / "nope")
    run = tmp_path / "r"
    run.mkdir()
    (run / "metrics.json").write_text("{broken")
    with pytest.raises(DataError, match="not valid JSON"):
        write_report(run)


def test_off_schema_metrics_is_a_one_line_error(fit_run: Path) -> None:
    path = fit_run / "metrics.json"
    metrics = json.loads(path.read_text(encoding="utf-8"))
    del metrics["selection_split"]
    path.write_text(json.dumps(metrics), encoding="utf-8")
    with pytest.raises(DataError, match="missing key 'selection_split'") as info:
        write_report(fit_run)
    assert "\n" not in str(info.value) and "metrics.json" in str(info.value)


def test_finite_metrics_drops_undefined_values() -> None:
    assert finite_metrics({"recall@1": 0.5, "nmi": None, "map@r": float("nan")}) == {"recall@1": 0.5}
    assert finite_metrics(None) == {}


def test_recall_keys_parsed() -> None:
    assert plots.recall_at_k({"recall@8": 0.9, "recall@1": 0.5, "map@r": 0.2}) == {1: 0.5, 8: 0.9}


def test_nearest_neighbours_matches_a_loop() -> None:
    rng = np.random.default_rng(1)
    g = rng.normal(size=(12, 4))
    q_idx = np.array([0, 5])
    idx, scores = plots.nearest_neighbours(g[q_idx], g, k=3, metric="euclidean", exclude=q_idx)
    for r, qi in enumerate(q_idx):
        d = [(np.linalg.norm(g[qi] - g[j]), j) for j in range(12) if j != qi]
        expect = [j for _, j in sorted(d)[:3]]
        assert idx[r].tolist() == expect
        assert np.allclose(-scores[r], [np.linalg.norm(g[qi] - g[j]) for j in expect])


def test_load_image_from_zip_and_placeholder(tmp_path: Path) -> None:
    import zipfile

    img = Image.fromarray(np.zeros((5, 7, 3), np.uint8))
    img.save(tmp_path / "a.png")
    with zipfile.ZipFile(tmp_path / "d.zip", "w") as z:
        z.write(tmp_path / "a.png", "top/a.png")
    zp = tmp_path / "d.zip"
    for spelling in (f"zip://{zp}!/top/a.png", f"{zp}::top/a.png", f"{zp}/top/a.png"):
        arr = plots.load_image(spelling)
        assert arr is not None and arr.shape == (5, 7, 3)
    assert plots.load_image("top/a.png", base_zips=[zp]).shape == (5, 7, 3)
    assert plots.load_image(str(tmp_path / "missing.png")) is None
    (tmp_path / "bad.png").write_text("not an image")
    assert plots.load_image(str(tmp_path / "bad.png")) is None
