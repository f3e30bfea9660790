"""Run a recipe's protocol: one :func:`~deepmetric.training.fit`, or a plan of sub-runs.

``run_protocol(config, run_dir, resume)``:

* ``protocol.name: single`` -> ``fit(config, run_dir)``; returns its ``metrics.json`` content;
* otherwise the protocol plans sub-runs (:mod:`deepmetric.training.protocols.base`); each trains
  into ``run_dir/<name>/``. The parent folder holds the recipe's ``config.yaml``,
  ``summary.json`` (every sub-run's final test metrics, and mean +- std per group, rewritten after
  each sub-run) and ``report.html`` with the per-run table.

Resuming (``resume=True``, ``deepmetric train ... --resume``): finished sub-runs (their
``metrics.json`` has test metrics) are skipped, an interrupted one (``checkpoints/last.pt``
without test metrics) resumes exactly, the rest start. Without ``resume`` the parent folder must
not hold sub-runs yet. The parent's ``config.yaml`` must match the resumed config.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from deepmetric.config import Config, load_config, save_config
from deepmetric.errors import ConfigError
from deepmetric.training.protocols.base import SubRun

__all__ = ["plan_protocol", "run_protocol", "sub_run_finished"]


def plan_protocol(config: Config, run_dir: Path) -> list[SubRun]:
    """The sub-runs of ``config.protocol`` (``[]`` for ``single``)."""
    from deepmetric.training.protocols import PROTOCOLS

    if config.protocol.name == "single":
        return []
    return PROTOCOLS.resolve(config.protocol.name)().plan(config, run_dir)


def sub_run_finished(run_dir: Path) -> bool:
    """True when ``run_dir/metrics.json`` holds the final test metrics."""
    from deepmetric.run_files import read_metrics

    if not (run_dir / "metrics.json").is_file():
        return False
    return read_metrics(run_dir).test is not None


def _check_parent(run_dir: Path, config: Config, resume: bool, plan: list[SubRun]) -> None:
    started = [s.name for s in plan if (run_dir / s.name).exists()]
    saved = run_dir / "config.yaml"
    if not resume:
        if started or (run_dir / "summary.json").exists():
            raise ConfigError(
                f"run folder '{run_dir}' already holds sub-runs ({', '.join(started) or 'summary.json'}); "
                "continue it with --resume (resume=True) or choose a new run folder"
            )
        return
    if not saved.is_file():
        raise ConfigError(f"cannot resume: '{saved}' does not exist; '{run_dir}' is not a protocol run folder")
    from deepmetric.training.fit import config_differences

    changed = config_differences(load_config(saved), config)
    if changed:
        raise ConfigError(
            f"cannot resume: the config differs from '{saved}' in {', '.join(changed)}; resume with the saved "
            "config or start a new run folder"
        )


def _summarize(config: Config, run_dir: Path, plan: list[SubRun]) -> dict[str, Any]:
    from deepmetric.run_files import SubRun as SubRunRecord
    from deepmetric.run_files import read_metrics, summarize, write_run_file

    records = []
    class_names = None
    for sub in plan:
        folder = run_dir / sub.name
        if not sub_run_finished(folder):
            continue
        metrics = read_metrics(folder)
        class_names = class_names or metrics.class_names
        records.append(SubRunRecord(name=sub.name, run_dir=sub.name, params=sub.params, group=sub.group,
                                    test=metrics.test or {}, test_step=int(metrics.test_step or 0)))
    summary = summarize(config.protocol.name, records, class_names=class_names)
    write_run_file(summary, run_dir / "summary.json")
    return json.loads(summary.model_dump_json())


def run_protocol(
    config: Config, run_dir: str | Path, resume: bool = False, progress: bool = True, report: bool = True
) -> dict[str, Any]:
    """Train ``config`` by its protocol into ``run_dir``; returns ``metrics.json`` (single) or
    ``summary.json`` (several sub-runs) content. See the module docstring."""
    from deepmetric.training import distributed as dist_utils
    from deepmetric.training.fit import fit
    from deepmetric.training.run_lock import RunLock

    run_dir = Path(run_dir)
    plan = plan_protocol(config, run_dir)
    if not plan:
        return fit(config, run_dir, resume=resume, progress=progress, report=report)
    main = dist_utils.is_main_process()
    with RunLock(run_dir) if main else contextlib.nullcontext():
        return _run_plan(config, run_dir, plan, resume, progress, report, main)


def _run_plan(
    config: Config, run_dir: Path, plan: list[SubRun], resume: bool, progress: bool, report: bool, main: bool
) -> dict[str, Any]:
    from deepmetric.training.fit import fit

    _check_parent(run_dir, config, resume, plan)
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, run_dir / "config.yaml")
    summary: dict[str, Any] = {}
    for i, sub in enumerate(plan, 1):
        folder = run_dir / sub.name
        if sub_run_finished(folder):
            if main:
                print(f"[{i}/{len(plan)}] {sub.name}: finished, skipped", file=sys.stderr)
        else:
            again = (folder / "checkpoints" / "last.pt").is_file()
            if main:
                print(f"[{i}/{len(plan)}] {sub.name}: {'resuming' if again else 'training'} -> {folder}",
                      file=sys.stderr)
            # a sub-run folder is a plain single run: its config.yaml re-runs it on its own
            fit(load_config(sub.config, ["protocol.name=single"]), folder, resume=again, progress=progress,
                report=report)
        if main:
            summary = _summarize(config, run_dir, plan)
    if main and report:
        from deepmetric.evaluation.report import write_report

        write_report(run_dir)
    return summary
