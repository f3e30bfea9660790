"""The run report's verification curves (ROC with a log FAR axis, precision-recall) of the test
pairs, with the calibrated threshold marked where it lands on the test pairs.

The marked point is checked against an explicit Python loop over every test pair (independent of
deepmetric.evaluation.verification); run folders are built from test_embeddings.npz +
calibration.json directly, and once through `deepmetric train` + `deepmetric calibrate`."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from deepmetric.calibration import CALIBRATION_FILE, CalibrationFile, load_calibration
from deepmetric.cli import main
from deepmetric.embeddings_io import save_embeddings
from deepmetric.evaluation import verification_plots as vp
from deepmetric.evaluation.report import write_report
from deepmetric.run_files import write_run_file

torch.set_num_threads(1)

TOY_DIR = Path(__file__).resolve().parents[1] / "training"


def _blobs(n_classes: int = 5, per_class: int = 7, d: int = 4, spread: float = 1.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_classes, d)) * 2
    y = np.repeat(np.arange(n_classes), per_class)
    return (centers[y] + spread * rng.normal(size=(y.size, d))).astype(np.float32), y


def _score(a: np.ndarray, b: np.ndarray, metric: str) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    if metric == "cosine":
        return float(a @ b / (math.sqrt(a @ a) * math.sqrt(b @ b)))
    return math.sqrt(float((a - b) @ (a - b)))


def _reference(x: np.ndarray, y: np.ndarray, metric: str, threshold: float) -> tuple[float, float, float]:
    """(FAR, TAR, precision) at ``threshold`` by a plain loop over every unordered test pair."""
    tp = fp = genuine = impostor = 0
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            s = _score(x[i], x[j], metric)
            accepted = s >= threshold if metric == "cosine" else s <= threshold
            if y[i] == y[j]:
                genuine += 1
                tp += accepted
            else:
                impostor += 1
                fp += accepted
    return fp / impostor, tp / genuine, tp / (tp + fp) if tp + fp else float("nan")


def _safe_threshold(x: np.ndarray, y: np.ndarray, metric: str) -> float:
    """A threshold midway between two neighbouring test scores (no score near it) that accepts
    the closest 10-40 % of the pairs."""
    scores = sorted((_score(x[i], x[j], metric) for i in range(len(x)) for j in range(i + 1, len(x))),
                    reverse=metric == "cosine")  # closest first
    lo, hi = len(scores) // 10, len(scores) * 4 // 10
    k = lo + int(np.argmax(np.abs(np.diff(scores[lo:hi + 1]))))
    return (scores[k] + scores[k + 1]) / 2


def _calibration(metric: str, threshold: float, **rates: float) -> CalibrationFile:
    values = dict(far=0.05, tar=0.6, precision=0.7, target="far", target_value=0.1)
    values.update(rates)
    return CalibrationFile(
        metric=metric, accept="similarity >= threshold" if metric == "cosine" else "distance <= threshold",
        threshold=threshold, frr=1 - values["tar"], recall=values["tar"], split="val", checkpoint="best",
        n_items=20, n_classes=4, n_genuine_pairs=40, n_impostor_pairs=150, n_pairs_used=190, pairs_sampled=False,
        max_pairs=10_000_000, seed=0, **values,
    )


def _run_folder(tmp_path: Path, x: np.ndarray, y: np.ndarray, calibration: CalibrationFile | None) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    save_embeddings(run / "test_embeddings.npz", x, y, [f"item{i}.png" for i in range(len(y))])
    if calibration is not None:
        write_run_file(calibration, run / CALIBRATION_FILE)
    return run


def _images(html: str) -> list[str]:
    return re.findall(r"<img src='([^']+)'", html)


def _markers(fig, gid: str) -> list:
    return [line for ax in fig.axes for line in ax.get_lines() if line.get_gid() == gid]


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_calibrated_point_equals_a_loop_over_all_test_pairs(tmp_path: Path, metric: str) -> None:
    x, y = _blobs()
    labels = np.array([f"class-{v}" for v in y])  # string labels as in a folder dataset
    threshold = _safe_threshold(x, y, metric)
    far, tar, precision = _reference(x, y, metric, threshold)
    assert 0 < far < 1 and 0 < tar < 1  # a point inside the curve, drawable on the log axis
    run = _run_folder(tmp_path, x, labels, _calibration(metric, threshold))

    html = write_report(run).read_text(encoding="utf-8")
    for name in ("plots/verification_roc.png", "plots/verification_pr.png"):
        assert (run / name).is_file() and name in _images(html)
    assert "ROC and precision-recall of the test pairs" in html
    # the caption states the validation rates the threshold was chosen for and the test rates
    assert "on val it gave FAR 0.05, TAR 0.6000, precision 0.7000" in html
    assert f"on the test pairs it gives FAR {far:.4g}, TAR {tar:.4f}, precision {precision:.4f}" in html

    curves = vp.run_curves(run, x, labels, metric="cosine")  # the calibration's metric wins
    assert curves.metric == metric and curves.point is not None and not curves.curve.sampled
    assert curves.point.far == pytest.approx(far, rel=1e-12)
    assert curves.point.tar == pytest.approx(tar, rel=1e-12)
    assert curves.point.precision == pytest.approx(precision, rel=1e-12)
    roc = _markers(vp.roc_figure(curves), vp.POINT_GID)
    pr = _markers(vp.pr_figure(curves), vp.POINT_GID)
    assert len(roc) == 1 and len(pr) == 1
    assert roc[0].get_xdata()[0] == pytest.approx(far, rel=1e-12)
    assert roc[0].get_ydata()[0] == pytest.approx(tar, rel=1e-12)
    assert pr[0].get_xdata()[0] == pytest.approx(tar, rel=1e-12)
    assert pr[0].get_ydata()[0] == pytest.approx(precision, rel=1e-12)
    # the validation rates are the hollow marker
    val = _markers(vp.roc_figure(curves), vp.VALIDATION_GID)
    assert len(val) == 1 and (val[0].get_xdata()[0], val[0].get_ydata()[0]) == (0.05, 0.6)
    # the point lies on the test ROC
    c = curves.curve
    assert any(f == pytest.approx(far) and t == pytest.approx(tar) for f, t in zip(c.fpr, c.tpr))
    assert roc[0].axes.get_xscale() == "log"


def test_without_calibration_no_point_and_the_caption_names_the_command(tmp_path: Path) -> None:
    x, y = _blobs()
    run = _run_folder(tmp_path, x, y, None)
    html = write_report(run).read_text(encoding="utf-8")
    assert "plots/verification_roc.png" in _images(html) and "plots/verification_pr.png" in _images(html)
    assert f"deepmetric calibrate {run} --far 1e-3" in html
    curves = vp.run_curves(run, x, y)
    assert curves.point is None
    for fig in (vp.roc_figure(curves), vp.pr_figure(curves)):
        assert not _markers(fig, vp.POINT_GID) and not _markers(fig, vp.VALIDATION_GID)
        assert len(fig.axes[0].get_lines()) == 2  # the curve and the chance line only


def test_calibration_that_does_not_transfer_is_said_so(tmp_path: Path) -> None:
    x, y = _blobs()
    threshold = _safe_threshold(x, y, "cosine")
    far, _, _ = _reference(x, y, "cosine", threshold)
    curves = vp.pair_curves(x, y, calibration=_calibration("cosine", threshold, target_value=far / 4, far=far / 5))
    text = vp.caption(curves, "runs/x", eval_checkpoint="last")
    assert "the target" in text and "x the target" in text and "recalibrate" in text
    assert "best checkpoint but the test embeddings are of the last one" in text


def test_unreadable_calibration_draws_the_curves_without_a_point(tmp_path: Path) -> None:
    x, y = _blobs()
    run = _run_folder(tmp_path, x, y, None)
    (run / CALIBRATION_FILE).write_text("{not json", encoding="utf-8")
    html = write_report(run).read_text(encoding="utf-8")
    assert "plots/verification_roc.png" in _images(html)
    assert "calibration.json could not be read" in html and "deepmetric calibrate" in html


def test_single_class_test_split_skips_the_curves_with_a_note(tmp_path: Path) -> None:
    x, _ = _blobs(n_classes=1)
    run = _run_folder(tmp_path, x, np.zeros(len(x), dtype=np.int64), None)
    html = write_report(run).read_text(encoding="utf-8")
    assert "verification_roc.png" not in html and "ROC and precision-recall curves skipped" in html
    assert "no impostor pair" in html


def test_large_test_sets_use_the_seeded_pair_sample(tmp_path: Path) -> None:
    x, y = _blobs(n_classes=6, per_class=20)  # 7140 pairs, kept at most 600
    cal = _calibration("cosine", 0.5)
    a = vp.pair_curves(x, y, calibration=cal, max_pairs=600, seed=3)
    b = vp.pair_curves(x, y, calibration=cal, max_pairs=600, seed=3)
    c = a.curve
    assert c.sampled and c.n_genuine + c.n_impostor == 120 * 119 // 2
    assert c.n_genuine_used + c.n_impostor_used < 800  # Bernoulli draws around the budget
    assert a.point == b.point  # same seed, same subset
    assert "seeded sample of" in vp.caption(a, "runs/x")
    # thinning keeps long curves drawable and the ends in place
    many = vp.pair_curves(*_blobs(n_classes=10, per_class=40, seed=1))
    drawn = vp._drawn(many.curve, points=50)
    assert many.curve.fpr.size > 200 and drawn.size <= 102 and drawn[0] == 0 and drawn[-1] == many.curve.fpr.size - 1


# ----------------------------------------------------------------------------- through the CLI


def test_calibrate_refreshes_the_report_with_the_point(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.syspath_prepend(str(TOY_DIR))
    from toy_training import write_toy_recipe  # type: ignore[import-not-found]

    run = tmp_path / "run"
    assert main(["train", str(write_toy_recipe(tmp_path)), "--out", str(run), "--no-progress"]) == 0
    capsys.readouterr()
    html = (run / "report.html").read_text(encoding="utf-8")
    assert "plots/verification_roc.png" in _images(html) and "--far 1e-3" in html  # not calibrated yet

    assert main(["calibrate", str(run), "--far", "0.1", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "report updated:" in err
    html = (run / "report.html").read_text(encoding="utf-8")
    cal = load_calibration(run)
    npz = np.load(run / "test_embeddings.npz")
    far, tar, precision = _reference(npz["embeddings"], npz["labels"], cal.metric, cal.threshold)
    assert f"on val it gave FAR {cal.far:.4g}, TAR {cal.tar:.4f}" in html
    assert f"on the test pairs it gives FAR {far:.4g}, TAR {tar:.4f}" in html
    assert "plots/verification_roc.png" in _images(html) and "plots/verification_pr.png" in _images(html)

    # a report that cannot be rebuilt only warns: the calibration itself succeeded
    monkeypatch.setattr("deepmetric.evaluation.report.write_report",
                        lambda run_dir: (_ for _ in ()).throw(OSError("disk full")))
    assert main(["calibrate", str(run), "--far", "0.1", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "warning: report.html could not be refreshed (disk full)" in err and "deepmetric report" in err
