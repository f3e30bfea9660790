"""The run report: ``write_report(run_dir)`` turns a run folder into ``plots/*.png`` and
``report.html``.

It reads only files of the run folder (see docs/run_folder.md):

* ``config.yaml``            the resolved config (shown verbatim)
* ``log.csv``                training log: step, epoch, loss, lr, seconds, ...  -> loss curve
* ``metrics.json``           evaluations during training, the untrained baseline, the best
                             checkpoint and the test metrics -> metric curves, Recall@K chart,
                             summary table
* ``test_embeddings.npz``    embeddings, labels, paths of the test split -> 2-D projection
                             and retrieval grid
* a confusion matrix, for classification runs: ``metrics.json["test"]["confusion_matrix"]``
  (optionally with ``"class_names"``) or ``test_predictions.npz`` (``labels``, ``predictions``)
* ``figures/*.png``          extra figures written by an experiment pipeline (e.g. ROC curves
                             and Grad-CAM heat maps of :mod:`deepmetric.experiments.skin_lesions`),
                             shown after the standard plots with a caption from FIGURE_CAPTIONS

Missing pieces are skipped (a run that is still training has no test metrics yet); the HTML says
what is missing instead of failing. Only a missing or unreadable run folder is an error.
"""

from __future__ import annotations

import csv
import html
import json
import math
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from deepmetric.errors import DataError
from deepmetric.evaluation import plots

PLOTS_DIR = "plots"

#: folder of extra PNGs that experiment pipelines put into a run folder (shown in the report)
FIGURES_DIR = "figures"

#: title and caption of known extra figures, by file stem; others are titled by their name
FIGURE_CAPTIONS = {
    "roc": ("ROC curves", "One class against the rest on the test split; AUC in the legend."),
    "heatmaps": ("Heat maps", "Test images with the Grad-CAM map of the predicted class (and the spatial "
                 "attention map, for attention models) overlaid: red is where the network looks."),
}

#: preferred order of metrics in the summary table; others follow alphabetically
METRIC_ORDER = ["recall@1", "recall@2", "recall@4", "recall@8", "precision@1", "r_precision", "map@r", "nmi", "f1"]


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


def numeric_metrics(block: Any) -> dict[str, float]:
    """The scalar metrics of a metrics.json block: accepts ``{"metrics": {...}}``,
    ``{"test": {...}}`` or a flat ``{name: value}`` mapping."""
    if not isinstance(block, Mapping):
        return {}
    if isinstance(block.get("metrics"), Mapping):
        return numeric_metrics(block["metrics"])
    flat = {k: float(v) for k, v in block.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if not flat:
        for key in ("test", "val", "validation"):
            if isinstance(block.get(key), Mapping):
                return numeric_metrics(block[key])
    return flat


#: metrics drawn as curves during training, when present (else the first MAX_CURVES others)
CURVE_METRICS = ["recall@1", "recall@4", "map@r", "r_precision", "nmi", "accuracy"]
MAX_CURVES = 6


def is_count(name: str) -> bool:
    """Bookkeeping counts (``n_queries``, ``n_queries_excluded``) and per-class entries are left
    out of the summary table and the curves."""
    return name.startswith("n_") or "/" in name  # counts, and per-class details ("per_class_accuracy/cat")


def order_metrics(names: list[str]) -> list[str]:
    """Sort metric names: the usual retrieval metrics first, in a fixed order."""
    rank = {n: i for i, n in enumerate(METRIC_ORDER)}
    return sorted(names, key=lambda n: (rank.get(n.lower(), len(rank)), n))


def summary_rows(baseline: Mapping[str, float], test: Mapping[str, float]) -> list[tuple[str, float | None, float | None]]:
    """(metric, untrained, trained) for every metric in either dict."""
    names = order_metrics([n for n in set(baseline) | set(test) if not is_count(n)])
    return [(n, baseline.get(n), test.get(n)) for n in names]


def _fmt(v: float | None) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:.4f}" if abs(v) < 1000 else f"{v:.0f}"


def _baseline_block(metrics: Mapping[str, Any], split: str) -> dict[str, float]:
    base = metrics.get("baseline")
    if isinstance(base, Mapping) and isinstance(base.get(split), Mapping):
        return numeric_metrics(base[split])
    return numeric_metrics(base)


def load_metrics(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "metrics.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(
            f"'{path}' is not valid JSON ({exc.msg} at line {exc.lineno}); "
            "the run may have been interrupted while writing it: re-run `deepmetric eval` on the run folder"
        ) from exc
    return data if isinstance(data, dict) else {}


def _config_metric(run_dir: Path) -> tuple[str, str]:
    """(config text, k-NN metric name) from config.yaml."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return "", "cosine"
    text = path.read_text(encoding="utf-8")
    metric = "cosine"
    try:
        import yaml

        cfg = yaml.safe_load(text) or {}
        ev = cfg.get("evaluation", cfg.get("eval", {})) if isinstance(cfg, dict) else {}
        if isinstance(ev, dict) and isinstance(ev.get("metric"), str):
            metric = ev["metric"]
    except Exception:  # a report must not fail on an odd config; show it as text
        pass
    return text, metric


def image_sources(run_dir: Path) -> tuple[list[Path], list[Path]]:
    """(folders, zip archives) in which the test items' paths may be found: the run folder, the
    current folder, and the config's ``data.root`` (the embedded Omniglot zip when an
    ``omniglot`` run has no root)."""
    dirs, zips = [run_dir, Path.cwd()], []
    path = run_dir / "config.yaml"
    try:
        import yaml

        cfg = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else {}
        data = cfg.get("data", {}) if isinstance(cfg, dict) else {}
        root = data.get("root") if isinstance(data, dict) else None
        if root:
            root_path = Path(str(root)).expanduser()
            if root_path.suffix.lower() == ".zip":
                zips.append(root_path)
            elif root_path.is_dir():
                dirs.append(root_path)
        elif isinstance(data, dict) and data.get("name") == "omniglot":
            from deepmetric.data.omniglot import embedded_omniglot_zip

            zips.append(embedded_omniglot_zip())
    except Exception:  # images are a nicety: an odd config only means placeholders
        pass
    return dirs, zips


def _confusion(run_dir: Path, test_block: Mapping[str, Any]) -> tuple[np.ndarray, list[str] | None] | None:
    cm = test_block.get("confusion_matrix") if isinstance(test_block, Mapping) else None
    if cm is not None:
        arr = np.asarray(cm, dtype=float)
        if arr.ndim == 2 and arr.shape[0] == arr.shape[1] and arr.size:
            names = test_block.get("class_names")
            return arr, list(names) if isinstance(names, list) else None
    pred_path = run_dir / "test_predictions.npz"
    if pred_path.is_file():
        with np.load(pred_path, allow_pickle=False) as npz:
            if "labels" in npz.files and "predictions" in npz.files:
                y, p = npz["labels"], npz["predictions"]
                if y.shape == p.shape and y.size:
                    classes = np.unique(np.concatenate([y, p]))
                    pos = {c: i for i, c in enumerate(classes.tolist())}
                    arr = np.zeros((len(classes), len(classes)))
                    for a, b in zip(y.tolist(), p.tolist()):
                        arr[pos[a], pos[b]] += 1
                    names = [str(c) for c in npz["class_names"]] if "class_names" in npz.files else [str(c) for c in classes]
                    return arr, names
    return None


def make_plots(run_dir: Path, seed: int = 0) -> tuple[dict[str, Path], list[str]]:
    """Write every plot the run folder has data for; returns ({name: png}, notes on what is missing)."""
    out_dir = run_dir / PLOTS_DIR
    made: dict[str, Path] = {}
    notes: list[str] = []
    metrics = load_metrics(run_dir)

    log_path = run_dir / "log.csv"
    if log_path.is_file():
        log = read_log(log_path)
        if log.get("step") and log.get("loss"):
            steps, loss = np.asarray(log["step"]), np.asarray(log["loss"])
            keep = np.isfinite(steps) & np.isfinite(loss)
            lrs = np.asarray(log["lr"])[keep] if "lr" in log else None
            if keep.any():
                made["loss"] = plots.plot_training_curves(steps[keep], loss[keep], lrs, out_dir / "loss.png")
    if "loss" not in made:
        notes.append("no training log (log.csv with step and loss columns): loss curve skipped")

    curves: dict[str, tuple[list[float], list[float]]] = {}
    for ev in metrics.get("evaluations", []) or []:
        if not isinstance(ev, Mapping) or ev.get("split", "val") == "test":
            continue
        step = ev.get("step")
        for name, value in numeric_metrics(ev).items():
            if isinstance(step, (int, float)) and math.isfinite(value) and not is_count(name):
                curves.setdefault(name, ([], []))
                curves[name][0].append(float(step))
                curves[name][1].append(value)
    if curves:
        keep = [n for n in CURVE_METRICS if n in curves]
        curves = {n: curves[n] for n in (keep or order_metrics(list(curves))[:MAX_CURVES])}
        split = next((ev.get("split") for ev in metrics.get("evaluations", []) if isinstance(ev, Mapping)), "val")
        # dashed untrained levels only when the baseline was measured on the same split
        base_block = metrics.get("baseline")
        same_split = isinstance(base_block, Mapping) and base_block.get("split", split) == split
        base = _baseline_block(metrics, str(split)) if same_split else {}
        best = metrics.get("best") if isinstance(metrics.get("best"), Mapping) else {}
        made["metrics"] = plots.plot_metric_curves(
            curves, {k: v for k, v in base.items() if k in curves}, out_dir / "metrics.png",
            best_step=best.get("step") if isinstance(best.get("step"), (int, float)) else None,
            title=f"Metrics on the {split} split during training",
        )
    else:
        notes.append("no evaluations in metrics.json: metric curves skipped")

    test = numeric_metrics(metrics.get("test"))
    baseline_test = _baseline_block(metrics, "test")
    series = {}
    if plots.recall_at_k(baseline_test):
        series["untrained"] = plots.recall_at_k(baseline_test)
    if plots.recall_at_k(test):
        series["trained"] = plots.recall_at_k(test)
    if series:
        made["recall"] = plots.plot_recall_at_k(series, out_dir / "recall_at_k.png")
    else:
        notes.append("no Recall@K test metrics: Recall@K chart skipped")

    emb_path = run_dir / "test_embeddings.npz"
    if emb_path.is_file():
        from deepmetric.embeddings_io import load_embeddings

        data = load_embeddings(emb_path)
        _, knn_metric = _config_metric(run_dir)
        dirs, zips = image_sources(run_dir)
        if len(data) >= 3:
            made["projection"] = plots.plot_projection(data.embeddings, data.labels, out_dir / "projection.png", seed=seed)
        if len(data) >= 2:
            made["retrieval"] = plots.plot_retrieval_grid(
                data.embeddings, data.labels, data.paths, out_dir / "retrieval.png",
                metric=knn_metric, seed=seed, base_dirs=dirs, base_zips=zips,
            )
    else:
        notes.append("no test_embeddings.npz: embedding map and retrieval grid skipped")

    test_block = metrics.get("test") if isinstance(metrics.get("test"), Mapping) else {}
    conf = _confusion(run_dir, test_block)
    if conf is not None:
        made["confusion"] = plots.plot_confusion_matrix(conf[0], out_dir / "confusion_matrix.png", conf[1])
    figures = run_dir / FIGURES_DIR
    if figures.is_dir():
        for png in sorted(figures.glob("*.png")):
            made[f"figure:{png.stem}"] = png
    return made, notes


CAPTIONS = {
    "loss": ("Training loss", "Loss at every logged step; the dark line is a running mean."),
    "metrics": ("Metrics during training", "Validation metrics at each evaluation; dashed lines are the untrained network."),
    "recall": ("Recall@K", "Fraction of test queries with a same-class item among their K nearest neighbours."),
    "projection": ("Embedding map", "2-D projection of test embeddings, one colour per class: tight, separate clusters are good."),
    "retrieval": ("Retrieval examples", "Each row: a test query and its nearest neighbours; green frames are the same class, red are not."),
    "confusion": ("Confusion matrix", "Rows are true classes, columns predicted classes."),
}

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1000px;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.up{color:#1a9850}.down{color:#d73027}img{max-width:100%;border:1px solid #eee}
pre{background:#f7f7f7;padding:1em;overflow-x:auto;font-size:0.85em}.note{color:#777;font-size:0.9em}
"""


def render_html(run_dir: Path, made: Mapping[str, Path], notes: list[str]) -> str:
    """The report page; images are referenced relative to the run folder."""
    metrics = load_metrics(run_dir)
    config_text, _ = _config_metric(run_dir)
    test = numeric_metrics(metrics.get("test"))
    baseline = _baseline_block(metrics, "test")
    e = html.escape
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>deepmetric report: {e(run_dir.name)}</title><style>{STYLE}</style></head><body>",
        f"<h1>deepmetric run report: {e(run_dir.name)}</h1>",
        f"<p class='note'>Run folder: {e(str(run_dir.resolve()))}<br>"
        f"Generated {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}</p>",
        "<h2>Test metrics</h2>",
    ]
    rows = summary_rows(baseline, test)
    if rows:
        parts.append("<table><tr><th>metric</th><th>untrained</th><th>trained</th><th>change</th></tr>")
        for name, b, t in rows:
            change, cls = "-", ""
            if b is not None and t is not None:
                change = f"{t - b:+.4f}"
                cls = "up" if t > b else "down" if t < b else ""
            parts.append(f"<tr><td>{e(name)}</td><td>{_fmt(b)}</td><td>{_fmt(t)}</td><td class='{cls}'>{change}</td></tr>")
        parts.append("</table>")
    else:
        parts.append("<p class='note'>No test metrics yet (metrics.json has no 'test' entry).</p>")
    best = metrics.get("best")
    if isinstance(best, Mapping) and best:
        parts.append(
            f"<p>Best checkpoint: step {e(str(best.get('step', '?')))}, "
            f"{e(str(best.get('metric', '?')))} = {e(_fmt(best.get('value')) if isinstance(best.get('value'), (int, float)) else str(best.get('value')))} "
            "(chosen on the validation split; the test metrics above are of this checkpoint).</p>"
        )
    for key in ("loss", "metrics", "recall", "projection", "retrieval", "confusion"):
        if key in made:
            title, caption = CAPTIONS[key]
            rel = made[key].relative_to(run_dir).as_posix()
            parts.append(f"<h2>{e(title)}</h2><p class='note'>{e(caption)}</p><img src='{e(rel)}' alt='{e(title)}'>")
    for key in made:
        if key.startswith("figure:"):
            stem = key.partition(":")[2]
            title, caption = FIGURE_CAPTIONS.get(stem, (stem.replace("_", " ").capitalize(), ""))
            rel = made[key].relative_to(run_dir).as_posix()
            parts.append(f"<h2>{e(title)}</h2><p class='note'>{e(caption)}</p><img src='{e(rel)}' alt='{e(title)}'>")
    if notes:
        parts.append("<h2>Not shown</h2><ul>" + "".join(f"<li class='note'>{e(n)}</li>" for n in notes) + "</ul>")
    if config_text:
        parts.append(f"<h2>Configuration</h2><pre>{e(config_text)}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(run_dir: str | Path, seed: int = 0) -> Path:
    """Write ``run_dir/plots/*.png`` and ``run_dir/report.html``; returns the HTML path.

    Raises :class:`DataError` if ``run_dir`` is not a folder or its files are corrupt.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(f"run folder '{run_dir}' not found; pass the folder that `deepmetric train` wrote (under runs/)")
    made, notes = make_plots(run_dir, seed=seed)
    out = run_dir / "report.html"
    out.write_text(render_html(run_dir, made, notes), encoding="utf-8")
    return out
