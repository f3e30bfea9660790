"""The report's "Robust fine-tuning" section: what the ``finetune`` options of a run measured.

:func:`finetune_html` renders, from ``metrics.json`` (:class:`~deepmetric.run_files.MetricsFile`):

* with a weight average (``finetune.ema_decay``): one row per evaluation with the selection metric
  of the raw weights and of the average, and which of the two ``best.pt`` holds;
* with WiSE-FT (``finetune.wise_alphas``): the mixing weights tried on the selection split, their
  selection metric, and the chosen one, whose weights gave the test metrics.

Nothing is rendered for a run without these options. Pure: builds HTML strings, reads nothing.
"""

from __future__ import annotations

import html

from deepmetric.evaluation.report_html import fmt
from deepmetric.run_files import MetricsFile

__all__ = ["finetune_html"]


def _ema_rows(m: MetricsFile, metric: str) -> list[str]:
    rows = [e for e in m.evaluations if e.ema is not None]
    if not rows:
        return []
    e = html.escape
    chosen = m.best.weights if m.best is not None else None
    parts = [
        "<h3>Moving average of the weights (EMA)</h3>",
        f"<p class='note'>{e(metric)} on the {e(m.selection_split)} split at each evaluation, raw weights and "
        f"their exponential moving average; best.pt holds the {e(chosen or 'raw')} weights of step "
        f"{m.best.step if m.best is not None else '-'}.</p>",
        "<table><tr><th>step</th><th>raw</th><th>EMA</th><th>better</th></tr>",
    ]
    for ev in rows:
        raw, avg = ev.metrics.get(metric), (ev.ema or {}).get(metric)
        better = "-"
        if raw is not None and avg is not None:
            better = "EMA" if avg > raw else "raw" if raw > avg else "tie"
        parts.append(f"<tr><td>{ev.step}</td><td>{fmt(raw)}</td><td>{fmt(avg)}</td><td>{better}</td></tr>")
    parts.append("</table>")
    return parts


def _wise_rows(m: MetricsFile) -> list[str]:
    if m.wise is None:
        return []
    e = html.escape
    w = m.wise
    parts = [
        "<h3>WiSE-FT: interpolation with the pretrained weights</h3>",
        f"<p class='note'>weights = (1 - alpha) x step-0 weights + alpha x fine-tuned weights, each alpha scored by "
        f"{e(w.metric)} on the {e(w.split)} split; alpha {w.alpha:g} was chosen and gave the test metrics "
        "(checkpoints/wise.pt; alpha 0 is the untrained network, 1 the fine-tuned one).</p>",
        "<table><tr><th>alpha</th><th>" + e(w.metric) + "</th><th>chosen</th></tr>",
    ]
    for row in w.table:
        parts.append(f"<tr><td>{row.alpha:g}</td><td>{fmt(row.value)}</td>"
                     f"<td>{'yes' if row.alpha == w.alpha else ''}</td></tr>")
    parts.append("</table>")
    return parts


def finetune_html(m: MetricsFile | None) -> list[str]:
    """The section's HTML parts (empty for a run without EMA or WiSE-FT)."""
    if m is None:
        return []
    metric = m.best.metric if m.best is not None else (m.wise.metric if m.wise is not None else "")
    body = _ema_rows(m, metric) + _wise_rows(m)
    return ["<h2>Robust fine-tuning</h2>", *body] if body else []
