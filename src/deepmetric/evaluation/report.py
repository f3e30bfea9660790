"""The run report: ``write_report(run_dir)`` turns a run folder into ``plots/*.png`` and
``report.html``.

It reads only files of the run folder (see docs/run_folder.md):

* ``config.yaml``            the resolved config (shown verbatim; gives the k-NN similarity and
                             ``data.root``, where the retrieval grid looks for images)
* ``log.csv``                training log: step, epoch, loss, lr, seconds, ...  -> loss curve
* ``metrics.json``           read through :func:`deepmetric.run_files.read_metrics`: evaluations,
                             baseline, best checkpoint, test metrics, class names, warnings
                             -> metric curves, Recall@K chart, summary table
* ``test_embeddings.npz``    embeddings, labels, paths of the test split -> 2-D projection,
                             retrieval grid, ROC and precision-recall of the test pairs
* ``calibration.json``       (after ``deepmetric calibrate``) the matching threshold, marked on
                             those two curves where it lands on the test pairs
                             (:mod:`deepmetric.evaluation.verification_plots`)
* ``test_predictions.npz``   (classification runs) ``labels``, ``predictions`` and optionally
                             ``class_names`` -> confusion matrix and per-class table
* ``figures/*.png``          extra figures written by an experiment pipeline, shown after the
                             standard plots, titled by file name; ``figures/<name>.txt`` (if
                             present) is the caption of ``figures/<name>.png``

Classes are shown by name everywhere: ``metrics.json``'s ``class_names``, else the
``class_names`` of ``test_predictions.npz``, else the parent folder names of the test items'
paths (when they name each class consistently), else the label numbers.

A folder holding ``summary.json`` (a multi-run protocol's parent) and no ``metrics.json`` gets
the protocol page of :mod:`deepmetric.evaluation.summary_report` instead.

Missing pieces are skipped (a run that is still training has no test metrics yet) and a piece
that cannot be read (a broken ``config.yaml``, a damaged ``.npz``) is skipped too; either way the
HTML says what is not shown and why. A missing run folder and a corrupt ``metrics.json`` are
errors (:class:`~deepmetric.errors.DataError`).
"""

from __future__ import annotations

import csv
import html
import math
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from deepmetric.errors import ConfigError, DataError
from deepmetric.evaluation import plots
from deepmetric.evaluation.finetune_report import finetune_html
from deepmetric.evaluation.report_html import (  # noqa: F401  (re-exported: order_metrics, is_count)
    fmt,
    is_count,
    notes_html,
    order_metrics,
    page_head,
    warnings_html,
)
from deepmetric.run_files import METRICS_FILE, SUMMARY_FILE, MetricsFile, read_metrics

if TYPE_CHECKING:
    from deepmetric.config import Config
    from deepmetric.embeddings_io import EmbeddingSet
    from deepmetric.evaluation.verification_plots import VerificationCurves

PLOTS_DIR = "plots"

#: folder of extra PNGs that experiment pipelines put into a run folder (shown in the report)
FIGURES_DIR = "figures"

#: test predictions of a classification run (labels, predictions, optional class_names)
PREDICTIONS_FILE = "test_predictions.npz"

#: metrics drawn as curves during training, when present (else the first MAX_CURVES others)
CURVE_METRICS = ["recall@1", "recall@4", "map@r", "r_precision", "nmi", "accuracy"]
MAX_CURVES = 6


# ---------------------------------------------------------------------------------------------
# small helpers (also used by the protocol page)


def read_log(path: Path) -> dict[str, list[float]]:
    """Numeric columns of a CSV training log (non-numeric cells become NaN)."""
    columns: dict[str, list[float]] = {}
    with path.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            for key, value in row.items():
                if key is None:
                    continue
                try:
                    number = float(value) if value not in (None, "") else math.nan
                except ValueError:
                    number = math.nan
                columns.setdefault(key, []).append(number)
    return columns


def finite_metrics(metrics: Mapping[str, float | None] | None) -> dict[str, float]:
    """The metrics of a metrics.json block that have a finite value."""
    return {k: float(v) for k, v in (metrics or {}).items() if v is not None and math.isfinite(v)}


def summary_rows(baseline: Mapping[str, float], test: Mapping[str, float]) -> list[tuple[str, float | None, float | None]]:
    """(metric, untrained, trained) for every metric in either dict."""
    names = order_metrics([n for n in set(baseline) | set(test) if not is_count(n)])
    return [(n, baseline.get(n), test.get(n)) for n in names]


def problem(exc: BaseException) -> str:
    """``ExceptionName: first line of the message`` (for the notes of skipped pieces)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# ---------------------------------------------------------------------------------------------
# reading the run folder


@dataclass
class RunData:
    """What the report knows about one run folder; ``notes`` say what is missing and why."""

    run_dir: Path
    metrics: MetricsFile | None = None
    config_text: str = ""
    config: Config | None = None
    embeddings: EmbeddingSet | None = None
    predictions: tuple[np.ndarray, np.ndarray, list[str] | None] | None = None
    class_names: list[str] | None = None
    confusion: np.ndarray | None = None
    verification: VerificationCurves | None = None
    notes: list[str] = field(default_factory=list)


def _read_config(data: RunData) -> None:
    from deepmetric.config import load_config

    path = data.run_dir / "config.yaml"
    if not path.is_file():
        data.notes.append("no config.yaml: configuration not shown; the retrieval grid assumes cosine similarity")
        return
    try:
        data.config_text = path.read_text(encoding="utf-8")
        data.config = load_config(path)
    except (OSError, UnicodeDecodeError, ConfigError) as exc:
        data.notes.append(
            f"config.yaml could not be used ({problem(exc)}): the retrieval grid assumes cosine similarity "
            "and looks for images only in the run folder, the current folder and the package's data"
        )


def _read_embeddings(data: RunData) -> None:
    from deepmetric.embeddings_io import load_embeddings

    path = data.run_dir / "test_embeddings.npz"
    if not path.is_file():
        data.notes.append("no test_embeddings.npz: embedding map, retrieval grid and verification curves skipped")
        return
    try:
        data.embeddings = load_embeddings(path)
    except DataError as exc:
        data.notes.append(f"test_embeddings.npz could not be read ({problem(exc)}): embedding map, retrieval grid and "
                          "verification curves skipped")


def _read_predictions(data: RunData) -> None:
    path = data.run_dir / PREDICTIONS_FILE
    if not path.is_file():
        return  # not a classification run
    try:
        with np.load(path, allow_pickle=False) as npz:
            if "labels" not in npz.files or "predictions" not in npz.files:
                data.notes.append(f"{PREDICTIONS_FILE} lacks 'labels' or 'predictions': confusion matrix skipped")
                return
            labels, predictions = np.asarray(npz["labels"]), np.asarray(npz["predictions"])
            names = [str(n) for n in npz["class_names"]] if "class_names" in npz.files else None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        data.notes.append(f"{PREDICTIONS_FILE} could not be read ({problem(exc)}): confusion matrix skipped")
        return
    data.predictions = (labels, predictions, names)


def names_from_paths(labels: np.ndarray, paths: Sequence[str]) -> list[str] | None:
    """Class names from the items' parent folder names, in label order: only when the labels are
    0..C-1 and every class's items share one parent name that no other class has."""
    labels = np.asarray(labels)
    if labels.size == 0 or labels.dtype.kind not in "iu" or len(paths) != labels.size or labels.min() < 0:
        return None
    parents: dict[int, set[str]] = {}
    for label, path in zip(labels.tolist(), paths):
        parents.setdefault(int(label), set()).add(Path(str(path).replace("\\", "/")).parent.name)
    if sorted(parents) != list(range(len(parents))) or any(len(p) != 1 or not next(iter(p)) for p in parents.values()):
        return None
    names = [next(iter(parents[c])) for c in range(len(parents))]
    return names if len(set(names)) == len(names) else None


def _choose_class_names(data: RunData) -> None:
    if data.metrics is not None and data.metrics.class_names:
        data.class_names = list(data.metrics.class_names)
    elif data.predictions is not None and data.predictions[2]:
        data.class_names = data.predictions[2]
    elif data.embeddings is not None:
        data.class_names = names_from_paths(data.embeddings.labels, data.embeddings.paths)


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int | None = None) -> np.ndarray | None:
    """Counts (rows true, columns predicted) over classes 0..C-1; None when the arrays do not
    hold matching non-negative integer class indices (below ``num_classes`` when given)."""
    y, p = np.asarray(labels), np.asarray(predictions)
    if y.shape != p.shape or y.ndim != 1 or not y.size or y.dtype.kind not in "iu" or p.dtype.kind not in "iu":
        return None
    top = int(max(y.max(), p.max()))
    c = num_classes if num_classes is not None else top + 1
    if min(int(y.min()), int(p.min())) < 0 or top >= c:
        return None
    matrix = np.zeros((c, c))
    np.add.at(matrix, (y.astype(np.int64), p.astype(np.int64)), 1)
    return matrix


def _build_confusion(data: RunData) -> None:
    if data.predictions is None:
        return
    labels, predictions, names = data.predictions
    num = len(names) if names else (len(data.class_names) if data.class_names else None)
    data.confusion = confusion_matrix(labels, predictions, num)
    if data.confusion is None:
        data.notes.append(
            f"{PREDICTIONS_FILE}: 'labels' and 'predictions' are not matching class indices"
            + (f" below {num} (the number of class names)" if num else "") + ": confusion matrix skipped"
        )


def read_run(run_dir: Path) -> RunData:
    """Everything the report shows of ``run_dir``; raises :class:`DataError` for a corrupt
    ``metrics.json``."""
    data = RunData(run_dir)
    if (run_dir / METRICS_FILE).is_file():
        data.metrics = read_metrics(run_dir)
    _read_config(data)
    _read_embeddings(data)
    _read_predictions(data)
    _choose_class_names(data)
    _build_confusion(data)
    return data


def packaged_archives() -> list[Path]:
    """Zip archives shipped in the package's assets (e.g. the demo's data set)."""
    assets = Path(__file__).resolve().parents[1] / "assets"
    return sorted(assets.rglob("*.zip")) if assets.is_dir() else []


def image_sources(run_dir: Path, config: Config | None) -> tuple[list[Path], list[Path]]:
    """(folders, zip archives) in which the test items' paths may be found: the run folder, the
    current folder, the config's ``data.root`` (a folder or a zip), and the zips shipped in the
    package (datasets read from a packaged zip store member names)."""
    dirs, zips = [run_dir, Path.cwd()], []
    root = config.data.root if config is not None else None
    if root:
        root_path = Path(str(root)).expanduser()
        if root_path.suffix.lower() == ".zip":
            zips.append(root_path)
        elif root_path.is_dir():
            dirs.append(root_path)
    return dirs, zips + packaged_archives()


# ---------------------------------------------------------------------------------------------
# plots


def _loss_plot(data: RunData, out_dir: Path, made: dict[str, Path]) -> None:
    path = data.run_dir / "log.csv"
    if not path.is_file():
        data.notes.append("no training log (log.csv): loss curve skipped")
        return
    try:
        log = read_log(path)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        data.notes.append(f"log.csv could not be read ({problem(exc)}): loss curve skipped")
        return
    if log.get("step") and log.get("loss"):
        steps, loss = np.asarray(log["step"]), np.asarray(log["loss"])
        keep = np.isfinite(steps) & np.isfinite(loss)
        lrs = np.asarray(log["lr"])[keep] if "lr" in log else None
        if keep.any():
            made["loss"] = plots.plot_training_curves(steps[keep], loss[keep], lrs, out_dir / "loss.png")
            return
    data.notes.append("log.csv has no step and loss values: loss curve skipped")


def _curves_plot(data: RunData, out_dir: Path, made: dict[str, Path]) -> None:
    m = data.metrics
    evaluations = m.evaluations if m is not None else []
    split = evaluations[0].split if evaluations else ""
    curves: dict[str, tuple[list[float], list[float]]] = {}
    for ev in evaluations:
        if ev.split != split:
            continue
        for name, value in finite_metrics(ev.metrics).items():
            if not is_count(name):
                steps, values = curves.setdefault(name, ([], []))
                steps.append(float(ev.step))
                values.append(value)
    if not curves:
        data.notes.append("no evaluations in metrics.json: metric curves skipped")
        return
    keep = [n for n in CURVE_METRICS if n in curves] or order_metrics(list(curves))[:MAX_CURVES]
    base = finite_metrics(m.baseline.metrics) if m is not None and m.baseline and m.baseline.split == split else {}
    made["metrics"] = plots.plot_metric_curves(
        {n: curves[n] for n in keep}, {k: v for k, v in base.items() if k in keep}, out_dir / "metrics.png",
        best_step=m.best.step if m is not None and m.best is not None else None,
        title=f"Metrics on the {split} split during training",
    )


def _recall_plot(data: RunData, out_dir: Path, made: dict[str, Path]) -> None:
    m = data.metrics
    series = {}
    baseline = plots.recall_at_k(finite_metrics(m.baseline.metrics)) if m is not None and m.baseline else {}
    trained = plots.recall_at_k(finite_metrics(m.test)) if m is not None else {}
    if baseline:
        series["untrained"] = baseline
    if trained:
        series["trained"] = trained
    if series:
        made["recall"] = plots.plot_recall_at_k(series, out_dir / "recall_at_k.png")
    else:
        data.notes.append("no Recall@K test metrics: Recall@K chart skipped")


def _embedding_plots(data: RunData, out_dir: Path, made: dict[str, Path], seed: int) -> None:
    emb = data.embeddings
    if emb is None:
        return
    if len(emb) >= 3:
        made["projection"] = plots.plot_projection(emb.embeddings, emb.labels, out_dir / "projection.png",
                                                   seed=seed, class_names=data.class_names)
    if len(emb) >= 2:
        dirs, zips = image_sources(data.run_dir, data.config)
        made["retrieval"] = plots.plot_retrieval_grid(
            emb.embeddings, emb.labels, emb.paths, out_dir / "retrieval.png",
            metric=data.config.eval.metric if data.config is not None else "cosine", seed=seed,
            base_dirs=dirs, base_zips=zips, class_names=data.class_names,
        )


def _verification_plots(data: RunData, out_dir: Path, made: dict[str, Path], seed: int) -> None:
    emb = data.embeddings
    if emb is None:
        return
    from deepmetric.evaluation import verification_plots

    metric = data.config.eval.metric if data.config is not None else "cosine"
    try:
        data.verification = verification_plots.run_curves(data.run_dir, emb.embeddings, emb.labels, metric=metric, seed=seed)
    except DataError as exc:
        data.notes.append(f"ROC and precision-recall curves skipped ({problem(exc)})")
        return
    data.notes += data.verification.notes
    made.update(verification_plots.plot_curves(data.verification, out_dir))


def make_plots(data: RunData, seed: int = 0) -> dict[str, Path]:
    """Write every plot the run folder has data for into ``plots/``; returns {name: png} (and
    adds to ``data.notes`` what is missing). ``figure:<stem>`` entries are ``figures/*.png``."""
    out_dir = data.run_dir / PLOTS_DIR
    made: dict[str, Path] = {}
    _loss_plot(data, out_dir, made)
    _curves_plot(data, out_dir, made)
    _recall_plot(data, out_dir, made)
    _embedding_plots(data, out_dir, made, seed)
    _verification_plots(data, out_dir, made, seed)
    if data.confusion is not None:
        made["confusion"] = plots.plot_confusion_matrix(data.confusion, out_dir / "confusion_matrix.png", data.class_names)
    figures = data.run_dir / FIGURES_DIR
    if figures.is_dir():
        for png in sorted(figures.glob("*.png")):
            made[f"figure:{png.stem}"] = png
    return made


# ---------------------------------------------------------------------------------------------
# HTML


CAPTIONS = {
    "loss": ("Training loss", "Loss at every logged step; the dark line is a running mean."),
    "metrics": ("Metrics during training", "Selection-split metrics at each evaluation; dashed lines are the untrained network."),
    "recall": ("Recall@K", "Fraction of test queries with a same-class item among their K nearest neighbours."),
    "projection": ("Embedding map", "2-D projection of test embeddings, one colour per class: tight, separate clusters are good."),
    "retrieval": ("Retrieval examples", "Each row: a test query and its nearest neighbours; green frames are the same class, red are not."),
    "confusion": ("Confusion matrix", "Rows are true classes, columns predicted classes."),
}


def _image(run_dir: Path, png: Path, title: str, caption: str) -> str:
    e = html.escape
    rel = png.relative_to(run_dir).as_posix()
    return f"<h2>{e(title)}</h2><p class='note'>{e(caption)}</p><img src='{e(rel)}' alt='{e(title)}'>"


def _metrics_table(m: MetricsFile | None) -> list[str]:
    test = finite_metrics(m.test) if m is not None else {}
    baseline = finite_metrics(m.baseline.metrics) if m is not None and m.baseline else {}
    rows = summary_rows(baseline, test)
    if not rows:
        return ["<p class='note'>No test metrics yet (metrics.json has no 'test' entry).</p>"]
    parts = ["<table><tr><th>metric</th><th>untrained</th><th>trained</th><th>change</th></tr>"]
    for name, b, t in rows:
        change, cls = "-", ""
        if b is not None and t is not None:
            change = f"{t - b:+.4f}"
            cls = "up" if t > b else "down" if t < b else ""
        parts.append(f"<tr><td>{html.escape(name)}</td><td>{fmt(b)}</td><td>{fmt(t)}</td><td class='{cls}'>{change}</td></tr>")
    parts.append("</table>")
    return parts


def _best_line(m: MetricsFile | None) -> list[str]:
    if m is None or m.best is None:
        return []
    e = html.escape
    which = " (the weights' moving average)" if m.best.weights == "ema" else ""
    source = ("WiSE-FT's interpolation of this checkpoint with the step-0 weights (see below)" if m.wise is not None
              else "this checkpoint")
    return [
        f"<p>Best checkpoint: step {m.best.step}{which}, {e(m.best.metric)} = {fmt(m.best.value)} "
        f"(chosen on the {e(m.selection_split)} split; the test metrics above are of {source}"
        f"{', so they are optimistic' if m.selection_split == 'test' else ''}).</p>"
    ]


def per_class_rows(matrix: np.ndarray, class_names: Sequence[str] | None) -> list[tuple[str, int, int, float | None]]:
    """(class name, test items, correctly predicted, accuracy) per row of a confusion matrix."""
    rows = []
    for i in range(matrix.shape[0]):
        support, correct = int(matrix[i].sum()), int(matrix[i, i])
        name = plots.class_label(i, class_names if class_names and len(class_names) == matrix.shape[0] else None,
                                 max_chars=10_000)
        rows.append((name, support, correct, correct / support if support else None))
    return rows


def _confusion_section(data: RunData, made: Mapping[str, Path]) -> list[str]:
    if "confusion" not in made or data.confusion is None:
        return []
    title, caption = CAPTIONS["confusion"]
    parts = [_image(data.run_dir, made["confusion"], title, caption),
             "<table><tr><th>class</th><th>test items</th><th>correct</th><th>accuracy</th></tr>"]
    for name, support, correct, acc in per_class_rows(data.confusion, data.class_names):
        parts.append(f"<tr><td>{html.escape(name)}</td><td>{support}</td><td>{correct}</td><td>{fmt(acc)}</td></tr>")
    parts.append("</table>")
    return parts


def _verification_section(data: RunData, made: Mapping[str, Path]) -> list[str]:
    if data.verification is None or "verification_roc" not in made:
        return []
    from deepmetric.evaluation.verification_plots import caption

    e = html.escape
    checkpoint = data.config.eval.checkpoint if data.config is not None else None
    images = "".join(f"<img src='{e(made[k].relative_to(data.run_dir).as_posix())}' alt='{e(alt)}'>"
                     for k, alt in (("verification_roc", "ROC"), ("verification_pr", "Precision-recall")) if k in made)
    return [f"<h2>Verification: ROC and precision-recall of the test pairs</h2>"
            f"<p class='note'>{e(caption(data.verification, data.run_dir, checkpoint))}</p>{images}"]


def _figure_caption(data: RunData, png: Path) -> str:
    path = png.with_suffix(".txt")
    if not path.is_file():
        return ""
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        data.notes.append(f"caption {FIGURES_DIR}/{path.name} could not be read ({problem(exc)}): figure shown without it")
        return ""


def render_html(data: RunData, made: Mapping[str, Path]) -> str:
    """The report page of one run; images are referenced relative to the run folder."""
    m = data.metrics
    parts = page_head("deepmetric run report", data.run_dir)
    parts += warnings_html(m.warnings if m is not None else [])
    parts += ["<h2>Test metrics</h2>", *_metrics_table(m), *_best_line(m), *finetune_html(m)]
    for key in ("loss", "metrics", "recall", "projection", "retrieval"):
        if key in made:
            parts.append(_image(data.run_dir, made[key], *CAPTIONS[key]))
    parts += _confusion_section(data, made)
    parts += _verification_section(data, made)
    for key, png in made.items():
        if key.startswith("figure:"):
            title = png.stem.replace("_", " ").replace("-", " ").capitalize()
            parts.append(_image(data.run_dir, png, title, _figure_caption(data, png)))
    parts += notes_html(data.notes)
    if data.config_text:
        parts.append(f"<h2>Configuration</h2><pre>{html.escape(data.config_text)}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(run_dir: str | Path, seed: int = 0) -> Path:
    """Write ``run_dir/plots/*.png`` and ``run_dir/report.html``; returns the HTML path.

    A multi-run protocol's parent folder (``summary.json`` and no ``metrics.json``) gets the
    protocol page (:func:`deepmetric.evaluation.summary_report.write_summary_report`).
    Raises :class:`DataError` if ``run_dir`` is not a folder or its ``metrics.json`` /
    ``summary.json`` is corrupt.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(f"run folder '{run_dir}' not found; pass the folder that `deepmetric train` wrote (under runs/)")
    if not (run_dir / METRICS_FILE).exists() and (run_dir / SUMMARY_FILE).is_file():
        from deepmetric.evaluation.summary_report import write_summary_report

        return write_summary_report(run_dir)
    data = read_run(run_dir)
    made = make_plots(data, seed=seed)
    out = run_dir / "report.html"
    out.write_text(render_html(data, made), encoding="utf-8")
    return out

