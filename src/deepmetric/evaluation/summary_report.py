"""The protocol page: ``report.html`` of a multi-run protocol's parent folder.

A protocol that trains several runs (folds, seeds, speakers x shots, ...) writes one run folder
per run below a parent folder and ``parent/summary.json`` (:class:`deepmetric.run_files.SummaryFile`).
:func:`write_summary_report` (reached through :func:`deepmetric.evaluation.report.write_report`
on the parent folder) reads it only through :func:`deepmetric.run_files.read_summary` and writes
``parent/report.html`` with

* the mean +- sample std (ddof = 1) of the main test metrics, one row per group of runs;
* one row per run: its name (a link to the run's own ``report.html``), group, parameters, test
  step and main test metrics;
* the summary's warnings and test class names, and a note for every run whose folder or report
  is missing.

A corrupt ``summary.json`` is a :class:`~deepmetric.errors.DataError`.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from deepmetric.evaluation.report_html import fmt, is_count, notes_html, order_metrics, page_head, warnings_html
from deepmetric.run_files import ALL_GROUP, MetricStat, SubRun, SummaryFile, read_summary

__all__ = ["MAX_COLUMNS", "main_metrics", "render_summary_html", "stat_cell", "write_summary_report"]

#: most metric columns in the protocol tables (the usual retrieval metrics first)
MAX_COLUMNS = 8


def main_metrics(summary: SummaryFile) -> list[str]:
    """The metrics shown in the tables: every group's metrics, counts and per-class entries left
    out, ordered like the run report, at most :data:`MAX_COLUMNS`."""
    names = {name for stats in summary.groups.values() for name in stats}
    names |= {name for run in summary.runs for name in run.test}
    return order_metrics([n for n in names if not is_count(n)])[:MAX_COLUMNS]


def stat_cell(stat: MetricStat | None, runs_in_group: int) -> str:
    """``mean ± std`` of a metric, with ``(n=…)`` when fewer runs than the group has defined it."""
    if stat is None or stat.mean is None:
        return "-"
    text = f"{fmt(stat.mean)} ± {fmt(stat.std)}"
    return text + (f" (n={stat.n})" if stat.n != runs_in_group else "")


def _params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items()) or "-"


def _header(first: Sequence[str], metrics: Sequence[str]) -> str:
    cells = [*first, *metrics]
    return "<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in cells) + "</tr>"


def _group_table(summary: SummaryFile, metrics: Sequence[str]) -> list[str]:
    sizes: dict[str, int] = {}
    for run in summary.runs:
        group = run.group or ALL_GROUP
        sizes[group] = sizes.get(group, 0) + 1
    parts = ["<h2>Mean ± std per group</h2>",
             "<p class='note'>Sample standard deviation (ddof = 1) over the group's runs; undefined values are left out.</p>",
             "<table>" + _header(["group", "runs"], metrics)]
    for group, stats in summary.groups.items():
        cells = "".join(f"<td>{html.escape(stat_cell(stats.get(m), sizes.get(group, 0)))}</td>" for m in metrics)
        parts.append(f"<tr><td>{html.escape(group)}</td><td>{sizes.get(group, 0)}</td>{cells}</tr>")
    parts.append("</table>")
    return parts


def _run_link(parent: Path, run: SubRun, notes: list[str]) -> str:
    e = html.escape
    report = Path(run.run_dir) / "report.html"
    if (parent / report).is_file():
        return f"<a href='{e(report.as_posix())}'>{e(run.name)}</a>"
    if (parent / run.run_dir).is_dir():
        notes.append(f"run {run.name} has no report.html yet: run `deepmetric report {parent / run.run_dir}`")
    else:
        notes.append(f"run {run.name}: its folder '{run.run_dir}' is not in {parent}")
    return e(run.name)


def _runs_table(parent: Path, summary: SummaryFile, metrics: Sequence[str], notes: list[str]) -> list[str]:
    e = html.escape
    parts = ["<h2>Runs</h2>", "<table>" + _header(["run", "group", "parameters", "test step"], metrics)]
    for run in summary.runs:
        cells = "".join(f"<td>{fmt(run.test.get(m))}</td>" for m in metrics)
        parts.append(
            f"<tr><td>{_run_link(parent, run, notes)}</td><td>{e(run.group or ALL_GROUP)}</td>"
            f"<td>{e(_params(run.params))}</td><td>{run.test_step}</td>{cells}</tr>"
        )
    parts.append("</table>")
    return parts


def render_summary_html(parent: Path, summary: SummaryFile) -> str:
    """The protocol page of ``parent``; links are relative to it."""
    notes: list[str] = []
    metrics = main_metrics(summary)
    parts = page_head("deepmetric protocol report", parent)
    parts.append(f"<p>Protocol <b>{html.escape(summary.protocol)}</b>: {len(summary.runs)} run(s) "
                 f"in {len(summary.groups)} group(s).</p>")
    parts += warnings_html(summary.warnings)
    if not metrics:
        parts.append("<p class='note'>No test metrics in summary.json.</p>")
    parts += _group_table(summary, metrics) + _runs_table(parent, summary, metrics, notes)
    if summary.class_names:
        parts.append("<h2>Test classes</h2><p>" + html.escape(", ".join(summary.class_names)) + "</p>")
    parts += notes_html(notes)
    parts.append("</body></html>")
    return "\n".join(parts)


def write_summary_report(parent: str | Path) -> Path:
    """Write ``parent/report.html`` from ``parent/summary.json``; returns the HTML path.

    Raises :class:`~deepmetric.errors.DataError` for a missing or corrupt ``summary.json``.
    """
    parent = Path(parent)
    summary = read_summary(parent)
    out = parent / "report.html"
    out.write_text(render_summary_html(parent, summary), encoding="utf-8")
    return out
