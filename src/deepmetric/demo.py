"""``deepmetric demo``: zero-shot retrieval on the Omniglot characters embedded in the package.

A tiny ResNet (random init) is trained with the multi-similarity loss on half of the characters
of five alphabets and tested on the other half, which it never saw. The demo prints the test
Recall@1/2/4/8, MAP@R and NMI of the trained network next to the same numbers for the untrained
one, and writes a run folder with ``report.html``. Its config is the ``demo_omniglot`` recipe
(the repository's ``recipes/demo_omniglot.yaml`` is the same experiment).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from deepmetric.recipes import PACKAGED_DEMO

__all__ = ["DEMO_METRICS", "QUICK_OVERRIDES", "auto_threads", "comparison_table", "demo_config", "run_demo"]

#: (metrics.json key, display name) of the demo's summary table
DEMO_METRICS = [
    ("recall@1", "Recall@1"),
    ("recall@2", "Recall@2"),
    ("recall@4", "Recall@4"),
    ("recall@8", "Recall@8"),
    ("map@r", "MAP@R"),
    ("nmi", "NMI"),
]

#: half a minute of training on small images: checks that everything runs and already learns
#: something (about +0.04 Recall@1 on the unseen characters); the final weights are tested
#: (no periodic validation in so short a run)
QUICK_OVERRIDES = [
    "trainer.steps=40",
    "optimizer.lr=0.003",
    "eval.checkpoint=last",
    "trainer.eval_every=0",
    "trainer.checkpoint_every=0",
    "trainer.log_every=2",
    "scheduler.warmup_steps=2",
    "data.image_size=16",
    "sampler.p=8",
]


def demo_config(quick: bool = False, steps: int | None = None, overrides: list[str] | None = None) -> Any:
    """The demo's :class:`~deepmetric.config.Config` (``quick`` shrinks it to a smoke run)."""
    from deepmetric.config import load_config

    extra = list(QUICK_OVERRIDES) if quick else []
    if steps is not None:
        extra.append(f"trainer.steps={steps}")
    return load_config(PACKAGED_DEMO, extra + list(overrides or []))


def auto_threads() -> int:
    """CPU threads for the demo: 1 when the machine is already busy (load >= cores; more threads
    then only fight for the cores), else up to 2 (the network is too small to use more)."""
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = 0.0
    return 1 if load >= cores else max(1, min(2, cores))


def _metrics(block: Any) -> dict[str, float]:
    if isinstance(block, Mapping) and isinstance(block.get("metrics"), Mapping):
        block = block["metrics"]
    return {k: float(v) for k, v in (block or {}).items() if isinstance(v, (int, float))}


def comparison_table(baseline: Mapping[str, Any], trained: Mapping[str, Any]) -> str:
    """Text table of the demo metrics: untrained, trained and the change."""
    base, test = _metrics(baseline), _metrics(trained)
    lines = [f"{'test metric (unseen classes)':<30}{'untrained':>10}{'trained':>10}{'change':>10}", "-" * 60]
    for key, name in DEMO_METRICS:
        if key not in test and key not in base:
            continue
        b, t = base.get(key), test.get(key)
        fb = f"{b:.3f}" if b is not None else "-"
        ft = f"{t:.3f}" if t is not None else "-"
        ch = f"{t - b:+.3f}" if b is not None and t is not None else ""
        lines.append(f"{name:<30}{fb:>10}{ft:>10}{ch:>10}")
    return "\n".join(lines)


def run_demo(
    out: str | Path,
    quick: bool = False,
    steps: int | None = None,
    threads: int | None = None,
    progress: bool = True,
    overrides: list[str] | None = None,
) -> dict[str, Any]:
    """Train the demo into ``out``, write its report, print the comparison; returns metrics.json."""
    import torch

    from deepmetric.evaluation.report import write_report
    from deepmetric.training import fit

    config = demo_config(quick, steps, overrides)
    out = Path(out)
    threads = threads or auto_threads()
    torch.set_num_threads(threads)
    print(
        f"deepmetric demo: Omniglot (embedded), {config.model.backbone} at {config.data.image_size} px, "
        f"{config.trainer.steps} steps, {threads} CPU thread(s) -> {out}",
        file=sys.stderr,
    )
    start = time.perf_counter()
    summary = fit(config, out, progress=progress)
    trained_s = time.perf_counter() - start
    report = write_report(out)
    total_s = time.perf_counter() - start
    print()
    print("Zero-shot retrieval on Omniglot characters never seen in training "
          f"({summary.get('test', {}).get('n_queries', 0):.0f} test images):")
    print(comparison_table(summary.get("baseline") or {}, summary.get("test") or {}))
    print(f"\ntrained and evaluated in {trained_s:.0f} s, report written in {total_s - trained_s:.0f} s")
    print(f"report: {report.resolve()}")
    return summary
