r"""Verification curves of a run's test split for the run report: the ROC (FAR on a log axis
vs TAR) and the precision-recall curve of the test pairs, with the calibrated threshold's point.

Contract:

* Pairs: every unordered pair i < j of ``test_embeddings.npz`` (genuine = same label, impostor
  otherwise; labels of any type), scored in the calibration's metric when ``RUN/calibration.json``
  exists (its threshold is in that unit), else in the run's ``eval.metric``. The scores come
  from :func:`deepmetric.evaluation.verification.pair_scores`, block by block: above
  ``max_pairs`` pairs (default :data:`REPORT_MAX_PAIRS`) a seeded subset per kind is kept, so
  memory stays bounded and the rates are unbiased estimates (the caption says so).
* Curves: :func:`~deepmetric.evaluation.verification.roc_from_scores` of those scores;
  precision at each point is :meth:`RocCurve.precision` (TP / (TP + FP) over the test pairs).
* The calibrated point (:class:`CalibratedPoint`): the calibration's threshold applied to the
  test pairs with its accept rule (similarity >= t, or distance <= t): TAR = accepted genuine /
  genuine pairs, FAR = accepted impostor / impostor pairs, precision = TP / (TP + FP) (the
  population-weighted estimate when sampled). It is a point of the test ROC. It is drawn as a
  filled marker (matplotlib ``gid`` :data:`POINT_GID`); the rates the threshold was chosen for on
  the validation split as a hollow one (``gid`` :data:`VALIDATION_GID`). Without
  ``calibration.json`` no point is drawn and the caption says how to calibrate.
* Drawing: FAR 0 has no place on a log axis, so FAR values below the axis floor (half the
  resolution, 0.5 / impostor pairs used) are drawn at the floor. Long curves are thinned to a few
  thousand drawn points, taken on a log FAR grid and a linear TAR grid (the same picture).
* Files: ``plots/verification_roc.png`` and ``plots/verification_pr.png``.

A run whose test split has no genuine or no impostor pair gets a one-line
:class:`~deepmetric.errors.DataError` from :func:`pair_curves` (the report lists it as not
shown); an unreadable ``calibration.json`` is not an error: the curves are drawn without the
point and :attr:`VerificationCurves.notes` says why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from deepmetric.errors import DataError
from deepmetric.evaluation.plots import _save
from deepmetric.evaluation.verification import RocCurve, equal_error_rate, pair_scores, roc_from_scores
from deepmetric.run_files import CALIBRATION_FILE, CalibrationFile, load_calibration

__all__ = [
    "POINT_GID",
    "REPORT_MAX_PAIRS",
    "VALIDATION_GID",
    "CalibratedPoint",
    "VerificationCurves",
    "caption",
    "far_floor",
    "pair_curves",
    "plot_curves",
    "pr_figure",
    "roc_figure",
    "run_curves",
]

#: pairs kept at most for the report's curves (beyond, the seeded subset of pair_scores)
REPORT_MAX_PAIRS = 2_000_000
#: matplotlib gid of the calibrated threshold's marker (rates on the test pairs)
POINT_GID = "calibrated-point"
#: matplotlib gid of the hollow marker at the validation rates of the calibration
VALIDATION_GID = "validation-point"
ROC_FILE = "verification_roc.png"
PR_FILE = "verification_pr.png"
#: points per thinning grid (a drawn curve has at most about twice as many)
DRAWN_POINTS = 2000
POINT_COLOR, VALIDATION_COLOR, CURVE_COLOR = "#d73027", "#4d4d4d", "#2171b5"


@dataclass(frozen=True)
class CalibratedPoint:
    """The calibration's threshold as it lands on the test pairs (``far``, ``tar``,
    ``precision``), and the calibration itself (its validation rates)."""

    far: float
    tar: float
    precision: float
    calibration: CalibrationFile


@dataclass(frozen=True)
class VerificationCurves:
    """The test pairs' ROC, the metric of their scores, the calibrated point (None without a
    usable calibration) and notes on what could not be used."""

    curve: RocCurve
    metric: str
    point: CalibratedPoint | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def genuine_share(self) -> float:
        """Share of genuine pairs among all test pairs (the precision of accepting everything)."""
        return self.curve.n_genuine / (self.curve.n_genuine + self.curve.n_impostor)


def _integer_labels(labels: Any) -> np.ndarray:
    """Labels of any type (ints, strings) as class indices 0..C-1."""
    return np.unique(np.asarray(labels), return_inverse=True)[1].reshape(-1).astype(np.int64)


def pair_curves(
    embeddings: Any,
    labels: Any,
    *,
    metric: str = "cosine",
    calibration: CalibrationFile | None = None,
    max_pairs: int = REPORT_MAX_PAIRS,
    seed: int = 0,
) -> VerificationCurves:
    """The ROC of every unordered pair of ``embeddings`` (a seeded subset above ``max_pairs``)
    and, with ``calibration``, its threshold's point on them; the scores use the calibration's
    metric when given, else ``metric``. One-line :class:`DataError` without a genuine or an
    impostor pair."""
    metric = calibration.metric if calibration is not None else metric
    scores = pair_scores(np.asarray(embeddings), _integer_labels(labels), metric=metric, max_pairs=max_pairs, seed=seed)
    curve = roc_from_scores(scores.genuine, scores.impostor, scores.higher_is_closer, scores.n_genuine, scores.n_impostor)
    if calibration is None:
        return VerificationCurves(curve, metric)
    t = calibration.threshold
    tar = float(np.mean(curve.accepts(scores.genuine, t)))
    far = float(np.mean(curve.accepts(scores.impostor, t)))
    tp, fp = tar * curve.n_genuine, far * curve.n_impostor
    precision = tp / (tp + fp) if tp + fp > 0 else float("nan")
    return VerificationCurves(curve, metric, CalibratedPoint(far, tar, precision, calibration))


def run_curves(
    run_dir: Path, embeddings: Any, labels: Any, *, metric: str = "cosine", seed: int = 0,
    max_pairs: int = REPORT_MAX_PAIRS,
) -> VerificationCurves:
    """:func:`pair_curves` of a run's test embeddings with ``run_dir/calibration.json`` when it
    exists; an unreadable calibration gives curves without a point and a note."""
    calibration, notes = None, []
    if (run_dir / CALIBRATION_FILE).exists():
        try:
            calibration = load_calibration(run_dir)
        except DataError as exc:
            notes.append(f"{CALIBRATION_FILE} could not be read ({str(exc).splitlines()[0]}): "
                         "verification curves drawn without the calibrated point")
    curves = pair_curves(embeddings, labels, metric=metric, calibration=calibration, max_pairs=max_pairs, seed=seed)
    return VerificationCurves(curves.curve, curves.metric, curves.point, notes)


# ------------------------------------------------------------------------------------ figures


def far_floor(curve: RocCurve) -> float:
    """Left end of the log FAR axis: half the FAR resolution of the impostor pairs used."""
    return 0.5 / curve.n_impostor_used


def _drawn(curve: RocCurve, points: int = DRAWN_POINTS) -> np.ndarray:
    """Indices of the ROC points to draw: all of a short curve, else the points on a log FAR grid
    and a linear TAR grid (both ends included)."""
    n = curve.fpr.size
    if n <= 2 * points:
        return np.arange(n)
    on_far = np.searchsorted(curve.fpr, np.geomspace(far_floor(curve), 1.0, points), side="right") - 1
    on_tar = np.searchsorted(curve.tpr, np.linspace(0.0, 1.0, points), side="left").clip(max=n - 1)
    return np.unique(np.r_[0, on_far, on_tar, n - 1])


def _marker(ax: Axes, x: float, y: float, gid: str, label: str, filled: bool) -> None:
    color = POINT_COLOR if filled else VALIDATION_COLOR
    (line,) = ax.plot([x], [y], ls="none", marker="o", ms=9 if filled else 11, zorder=5, label=label,
                      color=color, markerfacecolor=color if filled else "none", markeredgewidth=1.8)
    line.set_gid(gid)


def roc_figure(curves: VerificationCurves) -> Figure:
    """TAR against FAR (log axis) of the test pairs, with the calibrated point when there is one."""
    c, floor = curves.curve, far_floor(curves.curve)
    keep = _drawn(c)
    eer, _ = equal_error_rate(c)
    fig = Figure(figsize=(6, 4.4))
    ax = fig.subplots()
    ax.plot(np.maximum(c.fpr[keep], floor), c.tpr[keep], color=CURVE_COLOR, lw=2, drawstyle="steps-post",
            label=f"test pairs (AUC {c.auc():.3f}, EER {eer:.3f})")
    chance = np.geomspace(floor, 1.0, 200)  # TAR = FAR, a curve on the log axis
    ax.plot(chance, chance, color="#bdbdbd", ls="--", lw=1, label="chance")
    p = curves.point
    if p is not None:
        cal = p.calibration
        _marker(ax, max(cal.far, floor), cal.tar, VALIDATION_GID,
                f"chosen on validation: FAR {cal.far:.3g}, TAR {cal.tar:.3f}", filled=False)
        _marker(ax, max(p.far, floor), p.tar, POINT_GID, f"same threshold on test: FAR {p.far:.3g}, TAR {p.tar:.3f}",
                filled=True)
    ax.set_xscale("log")
    ax.set_xlim(floor, 1.0)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("FAR (false accept rate of impostor pairs, log)")
    ax.set_ylabel("TAR (true accept rate of genuine pairs)")
    ax.set_title("ROC of the test pairs" + ("" if p is not None else " (not calibrated)"))
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="best", fontsize=8)
    return fig


def pr_figure(curves: VerificationCurves) -> Figure:
    """Pair precision against recall (TAR) of the test pairs, with the calibrated point."""
    c = curves.curve
    keep = _drawn(c)
    precision = c.precision()[keep]
    ok = np.isfinite(precision)
    fig = Figure(figsize=(6, 4.4))
    ax = fig.subplots()
    ax.plot(c.tpr[keep][ok], precision[ok], color=CURVE_COLOR, lw=2, label="test pairs")
    share = curves.genuine_share
    ax.axhline(share, color="#bdbdbd", ls="--", lw=1, label=f"chance (genuine share {share:.3g})")
    p = curves.point
    if p is not None:
        cal = p.calibration
        _marker(ax, cal.recall, cal.precision, VALIDATION_GID,
                f"chosen on validation: precision {cal.precision:.3f}, recall {cal.recall:.3f}", filled=False)
        if np.isfinite(p.precision):
            _marker(ax, p.tar, p.precision, POINT_GID,
                    f"same threshold on test: precision {p.precision:.3f}, recall {p.tar:.3f}", filled=True)
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("recall (TAR of genuine pairs)")
    ax.set_ylabel("precision (genuine share of accepted pairs)")
    ax.set_title("Precision-recall of the test pairs" + ("" if p is not None else " (not calibrated)"))
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return fig


def plot_curves(curves: VerificationCurves, out_dir: Path) -> dict[str, Path]:
    """Write the ROC and precision-recall PNGs into ``out_dir``; returns
    ``{"verification_roc": path, "verification_pr": path}``."""
    return {
        "verification_roc": _save(roc_figure(curves), out_dir / ROC_FILE),
        "verification_pr": _save(pr_figure(curves), out_dir / PR_FILE),
    }


# ------------------------------------------------------------------------------------ caption


def _verdict(p: CalibratedPoint) -> str:
    cal = p.calibration
    if cal.target == "far":
        if p.far <= cal.target_value:
            return f"the test FAR meets the target FAR <= {cal.target_value:g}"
        return f"the test FAR is {p.far / cal.target_value:.2g}x the target {cal.target_value:g}: recalibrate on more data"
    if np.isfinite(p.precision) and p.precision >= cal.target_value:
        return f"the test precision meets the target >= {cal.target_value:g}"
    return (f"the test precision falls short of the target {cal.target_value:g} (precision also depends on the "
            "share of genuine pairs, which differs between the splits)")


def caption(curves: VerificationCurves, run_dir: Path | str, eval_checkpoint: str | None = None) -> str:
    """Plain-text caption of the two figures: what the curves are and, with a calibration, its
    validation rates against the rates of the same threshold on the test pairs; without one, the
    command that calibrates ``run_dir``. ``eval_checkpoint``: the checkpoint of the test embeddings
    (config ``eval.checkpoint``), to warn when the calibration used another one."""
    c = curves.curve
    unit = "similarity" if c.higher_is_closer else "distance"
    parts = [f"Every pair of test items ({c.n_genuine} genuine, {c.n_impostor} impostor), scored by {curves.metric} "
             f"{unit}."]
    if c.sampled:
        parts.append(f"Rates estimated on a seeded sample of {c.n_genuine_used + c.n_impostor_used} pairs.")
    p = curves.point
    if p is None:
        parts.append(f"Not calibrated: run `deepmetric calibrate {run_dir} --far 1e-3` (or --precision 0.99) to "
                     "choose a matching threshold on the validation split and mark it here.")
        return " ".join(parts)
    cal = p.calibration
    rule = cal.accept.replace("threshold", f"{cal.threshold:.6g}")
    target = f"FAR <= {cal.target_value:g}" if cal.target == "far" else f"precision >= {cal.target_value:g}"
    test_precision = f"{p.precision:.4f}" if np.isfinite(p.precision) else "undefined (nothing accepted)"
    parts += [
        f"Calibrated threshold ({rule}, chosen on the {cal.split} split for {target}): on {cal.split} it gave "
        f"FAR {cal.far:.4g}, TAR {cal.tar:.4f}, precision {cal.precision:.4f}; on the test pairs it gives "
        f"FAR {p.far:.4g}, TAR {p.tar:.4f}, precision {test_precision} (filled marker; hollow: {cal.split}).",
        _verdict(p)[0].upper() + _verdict(p)[1:] + ".",
    ]
    if p.far == 0:
        parts.append("No test impostor pair is accepted (FAR 0 is drawn at the left edge).")
    if eval_checkpoint is not None and eval_checkpoint != cal.checkpoint:
        parts.append(f"Note: the calibration used the {cal.checkpoint} checkpoint but the test embeddings are of "
                     f"the {eval_checkpoint} one.")
    return " ".join(parts)

