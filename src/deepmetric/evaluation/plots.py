"""PNG plots for run reports: training curves, Recall@K, 2-D embedding map, retrieval grid,
confusion matrix.

Every function takes plain numbers (lists, numpy arrays), writes one PNG and returns its path.
Figures are drawn with matplotlib's object API on an Agg canvas, so the global pyplot backend of
the caller is never touched and nothing needs a display.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

RECALL_KEY = re.compile(r"^(?:recall|r)@(\d+)$", re.IGNORECASE)
RIGHT, WRONG = "#1a9850", "#d73027"

#: longest class name drawn in a tile caption or legend entry (longer ones are shortened)
MAX_NAME_CHARS = 22


def class_label(label: object, class_names: Sequence[str] | None = None, max_chars: int = MAX_NAME_CHARS) -> str:
    """The display name of ``label``: ``class_names[label]`` for an integer label in range, else
    the label itself as text; shortened to ``max_chars`` with an ellipsis."""
    name = str(label)
    is_index = isinstance(label, (int, np.integer)) and not isinstance(label, (bool, np.bool_))
    if class_names is not None and is_index and 0 <= int(label) < len(class_names):  # type: ignore[arg-type]
        name = str(class_names[int(label)])  # type: ignore[arg-type]
    return name if len(name) <= max_chars else name[: max_chars - 1] + "\u2026"


def _save(fig: Figure, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(out, dpi=100, bbox_inches="tight")
    return out


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over ``window`` points (shorter at the start), same length as ``values``."""
    values = np.asarray(values, dtype=float)
    if window <= 1 or values.size == 0:
        return values
    csum = np.cumsum(np.insert(values, 0, 0.0))
    idx = np.arange(1, values.size + 1)
    lo = np.maximum(0, idx - window)
    return (csum[idx] - csum[lo]) / (idx - lo)


def plot_training_curves(
    steps: Sequence[float], losses: Sequence[float], lrs: Sequence[float] | None, out: Path
) -> Path:
    """Loss per logged step (raw and smoothed) and, if given, the learning rate below it."""
    steps_a, loss_a = np.asarray(steps, float), np.asarray(losses, float)
    has_lr = lrs is not None and len(lrs) == len(steps) and len(steps) > 0
    fig = Figure(figsize=(7, 4.8 if has_lr else 3.6))
    axes = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1]) if has_lr else [fig.subplots()]
    ax = axes[0]
    ax.plot(steps_a, loss_a, color="#9ecae1", lw=1, label="loss")
    window = max(1, min(25, len(loss_a) // 8))
    if window > 1:
        ax.plot(steps_a, moving_average(loss_a, window), color="#08519c", lw=2, label=f"mean of {window}")
    ax.set_ylabel("training loss")
    ax.set_title("Training loss")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")
    if has_lr:
        axes[1].plot(steps_a, np.asarray(lrs, float), color="#636363")
        axes[1].set_ylabel("learning rate")
        axes[1].grid(alpha=0.3)
        axes[1].ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    axes[-1].set_xlabel("step")
    return _save(fig, out)


def plot_metric_curves(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    baseline: Mapping[str, float],
    out: Path,
    best_step: float | None = None,
    title: str = "Validation metrics during training",
) -> Path:
    """One line per metric (``name -> (steps, values)``), the untrained baseline dashed."""
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    colors = [f"C{i}" for i in range(10)]
    for i, (name, (steps, values)) in enumerate(sorted(curves.items())):
        color = colors[i % len(colors)]
        ax.plot(steps, values, marker="o", ms=3, color=color, label=name)
        if name in baseline:
            ax.axhline(baseline[name], color=color, ls="--", lw=1, alpha=0.7)
    if best_step is not None:
        ax.axvline(best_step, color="k", ls=":", lw=1, label="best checkpoint")
    ax.set_xlabel("step")
    ax.set_ylabel("value")
    ax.set_title(title + ("  (dashed: untrained)" if baseline else ""))
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return _save(fig, out)


def recall_at_k(metrics: Mapping[str, float]) -> dict[int, float]:
    """``{K: value}`` for every ``recall@K`` key of ``metrics``."""
    found = {}
    for key, value in metrics.items():
        match = RECALL_KEY.match(key)
        if match and isinstance(value, (int, float)):
            found[int(match.group(1))] = float(value)
    return dict(sorted(found.items()))


def plot_recall_at_k(series: Mapping[str, Mapping[int, float]], out: Path) -> Path:
    """Grouped bars of Recall@K, one group per K and one bar per series (e.g. untrained, trained)."""
    ks = sorted({k for values in series.values() for k in values})
    fig = Figure(figsize=(7, 3.8))
    ax = fig.subplots()
    width = 0.8 / max(1, len(series))
    palette = ["#bdbdbd", "#2171b5", "#6baed6", "#fd8d3c"]
    x = np.arange(len(ks))
    for i, (name, values) in enumerate(series.items()):
        heights = [values.get(k, np.nan) for k in ks]
        bars = ax.bar(x + (i - (len(series) - 1) / 2) * width, heights, width, label=name, color=palette[i % 4])
        for bar, h in zip(bars, heights):
            if np.isfinite(h):
                ax.text(bar.get_x() + bar.get_width() / 2, h + 0.01, f"{h:.2f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, [f"R@{k}" for k in ks])
    ax.set_ylim(0, 1.18)
    ax.set_ylabel("Recall@K")
    ax.set_title("Recall@K on the test set")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper left", ncol=max(1, len(series)), fontsize=8)
    return _save(fig, out)


def project_2d(embeddings: np.ndarray, method: str = "auto", seed: int = 0) -> tuple[np.ndarray, str]:
    """2-D coordinates of ``embeddings`` by t-SNE (PCA-initialised) or PCA; returns (xy, method used)."""
    from sklearn.decomposition import PCA

    x = np.asarray(embeddings, dtype=np.float64)
    n = x.shape[0]
    spread = float(np.abs(x - x.mean(axis=0, keepdims=True)).max()) if n else 0.0
    if spread < 1e-9:  # all embeddings equal (a collapsed model): nothing to project, and t-SNE can crash
        return np.zeros((n, 2)), "none (all embeddings are identical)"
    if method == "auto":
        method = "tsne" if n >= 40 else "pca"
    if x.shape[1] > 50 and n > 50:
        x = PCA(n_components=50, random_state=seed).fit_transform(x)
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, max(5.0, (n - 1) / 4)))
        xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)
        return xy, "t-SNE"
    if x.shape[1] == 1:
        return np.hstack([x, np.zeros_like(x)]), "PCA"
    return PCA(n_components=2, random_state=seed).fit_transform(x), "PCA"


def choose_subset(labels: np.ndarray, max_classes: int, max_points: int, seed: int = 0) -> np.ndarray:
    """Indices of up to ``max_points`` rows from up to ``max_classes`` randomly chosen classes."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    if classes.size > max_classes:
        classes = rng.choice(classes, size=max_classes, replace=False)
    idx = np.flatnonzero(np.isin(labels, classes))
    if idx.size > max_points:
        idx = np.sort(rng.choice(idx, size=max_points, replace=False))
    return idx


def plot_projection(
    embeddings: np.ndarray,
    labels: np.ndarray,
    out: Path,
    max_classes: int = 20,
    max_points: int = 600,
    seed: int = 0,
    title: str = "Test embeddings",
    class_names: Sequence[str] | None = None,
) -> Path:
    """Scatter of a 2-D projection of (a subsample of) the embeddings, one colour per class
    (legend entries are ``class_names[label]`` when given)."""
    labels = np.asarray(labels)
    idx = choose_subset(labels, max_classes, max_points, seed)
    xy, method = project_2d(embeddings[idx], seed=seed)
    sub = labels[idx]
    classes = list(np.unique(sub))
    fig = Figure(figsize=(6.5, 6))
    ax = fig.subplots()
    cmap = __import__("matplotlib").colormaps["tab20"]
    for i, c in enumerate(classes):
        m = sub == c
        ax.scatter(xy[m, 0], xy[m, 1], s=14, color=cmap(i % 20), label=class_label(c, class_names), alpha=0.85, edgecolors="none")
    ax.set_xticks([])
    ax.set_yticks([])
    n_all = np.unique(labels).size
    ax.set_title(f"{title}: {method} of {len(idx)} points, {len(classes)} of {n_all} classes")
    if len(classes) <= 20:
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, markerscale=1.2, title="class")
    return _save(fig, out)


# ---------------------------------------------------------------------------------------------
# images for the retrieval grid

ZIP_MARKERS = ("!/", "::")


@lru_cache(maxsize=8)
def _open_zip(path: str) -> zipfile.ZipFile:
    return zipfile.ZipFile(path)


def _split_zip_path(path: str) -> tuple[str, str] | None:
    """``(zip file, member)`` for ``zip://a.zip!/m.png``, ``a.zip::m.png`` or ``a.zip/m.png``."""
    p = path.removeprefix("zip://")
    for marker in ZIP_MARKERS:
        if marker in p:
            archive, member = p.split(marker, 1)
            return archive, member.lstrip("/")
    low = p.lower()
    pos = low.find(".zip/")
    if pos >= 0:
        return p[: pos + 4], p[pos + 5 :]
    return None


def load_image(path: str, base_dirs: Sequence[Path] = (), base_zips: Sequence[Path] = ()) -> np.ndarray | None:
    """An image as an RGB uint8 array; ``None`` if it cannot be read (the caller draws a
    placeholder).

    ``path`` may be a file (absolute, or relative to one of ``base_dirs``), a zip member spelled
    ``zip://ARCHIVE!/MEMBER``, ``ARCHIVE::MEMBER`` or ``ARCHIVE.zip/MEMBER``, or a bare member
    name of one of ``base_zips`` (datasets read from a zip, e.g. Omniglot, store member names).
    """
    from PIL import Image, UnidentifiedImageError

    from deepmetric.data.image_io import to_mode

    if not path:
        return None
    try:
        for archive in base_zips:
            if Path(archive).is_file():
                zf = _open_zip(str(Path(archive).resolve()))
                try:
                    data = zf.read(path)
                except KeyError:
                    continue
                return np.asarray(to_mode(Image.open(io.BytesIO(data))))
        parts = _split_zip_path(path)
        if parts is not None:
            archive, member = parts
            candidates = [Path(archive)] + [b / archive for b in base_dirs]
            for cand in candidates:
                if cand.is_file():
                    data = _open_zip(str(cand.resolve())).read(member)
                    return np.asarray(to_mode(Image.open(io.BytesIO(data))))
            return None
        for cand in [Path(path)] + [b / path for b in base_dirs]:
            if cand.is_file():
                with Image.open(cand) as img:
                    return np.asarray(to_mode(img))
    except (OSError, KeyError, ValueError, UnidentifiedImageError, zipfile.BadZipFile):
        return None
    return None


def nearest_neighbours(
    queries: np.ndarray, gallery: np.ndarray, k: int, metric: str = "cosine", exclude: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` gallery indices and scores for a handful of queries (small inputs only).

    Score is cosine similarity (``metric="cosine"``), dot product (``"dot"``) or negative
    Euclidean distance (``"euclidean"``); higher is closer. ``exclude[i]`` is a gallery index
    that query ``i`` must not retrieve (itself).
    """
    q, g = np.asarray(queries, np.float64), np.asarray(gallery, np.float64)
    if metric == "cosine":
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        g = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
        scores = q @ g.T
    elif metric == "dot":
        scores = q @ g.T
    else:
        d2 = (q**2).sum(1)[:, None] + (g**2).sum(1)[None, :] - 2 * q @ g.T
        scores = -np.sqrt(np.maximum(d2, 0.0))
    if exclude is not None:
        scores[np.arange(len(q)), exclude] = -np.inf
    k = min(k, g.shape[0] - (1 if exclude is not None else 0))
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(scores, order, axis=1)


def plot_retrieval_grid(
    embeddings: np.ndarray,
    labels: np.ndarray,
    paths: Sequence[str],
    out: Path,
    n_queries: int = 6,
    k: int = 5,
    metric: str = "cosine",
    seed: int = 0,
    base_dirs: Sequence[Path] = (),
    base_zips: Sequence[Path] = (),
    class_names: Sequence[str] | None = None,
) -> Path:
    """Rows of (query, its top-``k`` neighbours in the rest of the set); neighbours framed green
    when they share the query's class and red when not. Captions name the class
    (``class_names[label]`` when given). Unreadable images become grey tiles."""
    labels = np.asarray(labels)
    n = len(labels)
    rng = np.random.default_rng(seed)
    queries = np.sort(rng.choice(n, size=min(n_queries, n), replace=False))
    nn_idx, nn_score = nearest_neighbours(embeddings[queries], embeddings, k, metric, exclude=queries)
    k = nn_idx.shape[1]
    fig = Figure(figsize=(1.5 * (k + 1) + 0.4, 1.75 * len(queries)))
    axes = np.asarray(fig.subplots(len(queries), k + 1, squeeze=False))

    def tile(ax, index: int, caption: str, color: str | None, lw: float) -> None:
        img = load_image(paths[index], base_dirs, base_zips) if paths else None
        if img is None:
            ax.add_patch(Rectangle((0, 0), 1, 1, color="#d9d9d9"))
            ax.text(0.5, 0.5, "no image", ha="center", va="center", fontsize=7, color="#636363")
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
        else:
            ax.imshow(img, cmap=None, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(color is not None)
            if color is not None:
                spine.set_edgecolor(color)
                spine.set_linewidth(lw)
        ax.set_title(caption, fontsize=7, color=color or "k")

    for r, q in enumerate(queries):
        tile(axes[r, 0], int(q), f"query\n{class_label(labels[q], class_names)}", "#252525", 2.5)
        for c in range(k):
            j = int(nn_idx[r, c])
            right = labels[j] == labels[q]
            mark = "right" if right else "wrong"
            tile(axes[r, c + 1], j, f"#{c + 1} {mark}: {class_label(labels[j], class_names)}\nscore {nn_score[r, c]:.3f}",
                 RIGHT if right else WRONG, 4)
    fig.suptitle(f"Retrieval: queries (left) and their top-{k} neighbours (green right, red wrong)", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return _save(fig, out)


def plot_confusion_matrix(matrix: np.ndarray, out: Path, class_names: Sequence[str] | None = None) -> Path:
    """Row-normalised confusion matrix (rows: true class, columns: predicted), counts annotated
    when the matrix is small."""
    m = np.asarray(matrix, dtype=float)
    c = m.shape[0]
    names = [class_label(i, class_names if class_names is not None and len(class_names) == c else None) for i in range(c)]
    rows = m.sum(axis=1, keepdims=True)
    norm = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    size = min(12.0, 2.5 + 0.45 * c)
    fig = Figure(figsize=(size + 1, size))
    ax = fig.subplots()
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    if c <= 30:
        ax.set_xticks(range(c), names, rotation=90, fontsize=7)
        ax.set_yticks(range(c), names, fontsize=7)
    if c <= 15:
        for i in range(c):
            for j in range(c):
                ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    acc = np.trace(m) / max(m.sum(), 1)
    ax.set_title(f"Confusion matrix (accuracy {acc:.3f})")
    return _save(fig, out)
