"""HTML pieces shared by the run report and the protocol (summary) report: metric ordering and
formatting, the page head, warnings and the "Not shown" notes."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

__all__ = ["METRIC_ORDER", "STYLE", "fmt", "is_count", "notes_html", "order_metrics", "page_head", "warnings_html"]

#: preferred order of metrics in the summary table; others follow alphabetically
METRIC_ORDER = ["recall@1", "recall@2", "recall@4", "recall@8", "precision@1", "r_precision", "map@r", "nmi", "f1"]


def is_count(name: str) -> bool:
    """Bookkeeping counts (``n_queries``, ``n_queries_excluded``) and per-class entries are left
    out of the summary table and the curves."""
    return name.startswith("n_") or "/" in name  # counts, and per-class details ("per_class_accuracy/cat")


def order_metrics(names: list[str]) -> list[str]:
    """Sort metric names: the usual retrieval metrics first, in a fixed order."""
    rank = {n: i for i, n in enumerate(METRIC_ORDER)}
    return sorted(names, key=lambda n: (rank.get(n.lower(), len(rank)), n))


def fmt(v: float | None) -> str:
    """A metric value for a table: 4 decimals, ``-`` when undefined."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:.4f}" if abs(v) < 1000 else f"{v:.0f}"


STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1000px;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.up{color:#1a9850}.down{color:#d73027}img{max-width:100%;border:1px solid #eee}
pre{background:#f7f7f7;padding:1em;overflow-x:auto;font-size:0.85em}.note{color:#777;font-size:0.9em}
.warning{background:#fff4e5;border-left:4px solid #f0a030;padding:0.4em 0.8em}
"""


def page_head(title: str, run_dir: Path) -> list[str]:
    """The opening of a report page: title, run folder and time of generation."""
    e = html.escape
    return [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>deepmetric report: {e(run_dir.name)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{e(title)}: {e(run_dir.name)}</h1>",
        f"<p class='note'>Run folder: {e(str(run_dir.resolve()))}<br>"
        f"Generated {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}</p>",
    ]


def warnings_html(warnings: Sequence[str]) -> list[str]:
    """Warnings of a run file as highlighted paragraphs."""
    return [f"<p class='warning'>Warning: {html.escape(w)}</p>" for w in warnings]


def notes_html(notes: Sequence[str]) -> list[str]:
    """The 'Not shown' section listing what was skipped and why."""
    if not notes:
        return []
    return ["<h2>Not shown</h2><ul>" + "".join(f"<li class='note'>{html.escape(n)}</li>" for n in notes) + "</ul>"]
