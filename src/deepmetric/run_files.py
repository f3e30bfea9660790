"""Typed run-folder files: ``metrics.json`` of one run and ``summary.json`` of a multi-run protocol.

Contract (see docs/run_folder.md):

* :class:`MetricsFile` is the whole content of ``run_dir/metrics.json`` as written by
  :func:`deepmetric.training.fit`: the selection-split evaluations, the untrained baseline, the
  best checkpoint and, once training has finished, the test metrics of that checkpoint.
* :class:`SummaryFile` is ``parent/summary.json`` of a protocol that trains several runs (folds,
  seeds, speakers x shots, ...): one :class:`SubRun` per run folder below ``parent`` and, per
  group of runs, the mean +- sample std (ddof = 1) of every test metric (:func:`summarize`).
* Metric dicts map a metric name to a float; an undefined value (NaN, +-inf) is ``null`` in the
  file and ``None`` in Python.
* Every model forbids unknown keys: a file that does not match the schema exactly is rejected
  by :func:`read_metrics` / :func:`read_summary` with a one-line
  :class:`~deepmetric.errors.DataError` naming the file and the first bad key. Reading is strict
  (a string is never turned into a number); building the models in Python is lenient (numpy
  scalars are accepted).
* :func:`write_run_file` writes a model atomically (temporary file + ``os.replace``), with
  non-finite floats as ``null`` and the file mode the umask gives a new file (0644 under 022).
* Files over :data:`MAX_FILE_BYTES` (64 MiB) are refused unread.

This module is low level: it imports only pydantic, numpy, the standard library and
:mod:`deepmetric.errors`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
    model_validator,
)

from deepmetric.atomic_io import atomic_write
from deepmetric.errors import DataError

__all__ = [
    "ALL_GROUP",
    "CALIBRATION_FILE",
    "MAX_FILE_BYTES",
    "METRICS_FILE",
    "SUMMARY_FILE",
    "Baseline",
    "Best",
    "CalibrationFile",
    "Evaluation",
    "MetricStat",
    "MetricsFile",
    "SubRun",
    "SummaryFile",
    "Wise",
    "WiseRow",
    "load_calibration",
    "metric_stats",
    "read_metrics",
    "read_summary",
    "summarize",
    "write_run_file",
]

#: file name of a run's metrics, inside the run folder
METRICS_FILE = "metrics.json"
#: file name of a multi-run protocol's summary, inside the parent folder
SUMMARY_FILE = "summary.json"
#: the group of a protocol whose runs have no group
ALL_GROUP = "all"
#: larger metrics/summary files are refused without being read
MAX_FILE_BYTES = 64 * 1024 * 1024

#: a metric dict: name -> value, None where undefined
Metrics = dict[str, float | None]


class _RunFileModel(BaseModel):
    """Base of every run-file model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

    #: optional fields of optional features: left out of the written file while None
    omit_when_none: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _omit_unset(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        for key in self.omit_when_none:
            if isinstance(data, dict) and data.get(key) is None:
                data.pop(key, None)
        return data


# ---------------------------------------------------------------------------------------------
# metrics.json


class Evaluation(_RunFileModel):
    """Metrics of the network at ``step`` on ``split`` (``val`` or ``test``); ``ema``: those of the
    moving average of the weights (``finetune.ema_decay``), once it has started."""

    omit_when_none = ("ema",)

    step: int
    split: str
    metrics: Metrics
    ema: Metrics | None = None


class Baseline(Evaluation):
    """The untrained network (step 0) on the test split."""


class Best(_RunFileModel):
    """The evaluation with the best ``metric`` (``eval.select_metric``): its step and value;
    ``weights`` (with ``finetune.ema_decay``): ``raw`` or ``ema``, the weights that scored it."""

    omit_when_none = ("weights",)

    step: int
    metric: str
    value: float | None
    weights: str | None = None


class WiseRow(_RunFileModel):
    """One WiSE-FT mixing weight: ``value`` of ``eval.select_metric`` and all ``metrics`` of the
    interpolated weights on the selection split."""

    alpha: float
    value: float | None
    metrics: Metrics


class Wise(_RunFileModel):
    """WiSE-FT (``finetune.wise_alphas``): the table alpha -> selection metric on ``split``
    (``eval.split``) and the chosen ``alpha``, whose weights gave the test metrics."""

    split: str
    metric: str
    alpha: float
    table: list[WiseRow]


class MetricsFile(_RunFileModel):
    """``run_dir/metrics.json``: everything :func:`deepmetric.training.fit` measured.

    ``test``, ``test_step`` and ``test_last`` appear once training has finished; ``class_names``
    names the test classes in label order; ``warnings`` are human-readable notes (e.g.
    "validation saturated"); ``protocol`` names the evaluation protocol. With ``finetune.*``:
    ``test_weights`` (``raw`` or ``ema``: the fine-tuned weights behind ``test``) and ``wise`` (the
    WiSE-FT table and chosen alpha), each present only when the option is on.
    """

    omit_when_none = ("test_weights", "wise")

    selection_split: str
    steps: int
    total_steps: int
    stopped_early: bool
    evaluations: list[Evaluation]
    baseline: Baseline | None
    best: Best | None
    test: Metrics | None = None
    test_last: Metrics | None = None
    test_step: int | None = None
    class_names: list[str] | None = None
    warnings: list[str] = []
    counts: dict[str, int] = {}
    protocol: str = "retrieval"
    test_weights: str | None = None
    wise: Wise | None = None


# ---------------------------------------------------------------------------------------------
# summary.json


class MetricStat(_RunFileModel):
    """One metric over several runs: mean and sample std (ddof = 1; 0.0 for one value) of the
    ``n`` finite values; ``values`` keeps every run's value in run order (None where undefined)."""

    mean: float | None
    std: float | None
    n: int
    values: list[float | None]


class SubRun(_RunFileModel):
    """One run of a multi-run protocol.

    ``run_dir`` is relative to the parent folder; ``params`` says what distinguishes this run
    (e.g. ``{"fold": 0}``); runs with the same ``group`` are aggregated together.
    """

    name: str
    run_dir: str
    params: dict[str, Any]
    group: str = ""
    test: Metrics
    test_step: int


class SummaryFile(_RunFileModel):
    """``parent/summary.json``: the runs of a protocol and, per group, every test metric's
    :class:`MetricStat` (a protocol without groups has the single group ``"all"``)."""

    protocol: str
    runs: list[SubRun]
    groups: dict[str, dict[str, MetricStat]]
    class_names: list[str] | None = None
    warnings: list[str] = []

    @model_validator(mode="after")
    def _unique_names(self) -> SummaryFile:
        names = [run.name for run in self.runs]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"sub-run names must be unique, but {', '.join(duplicates)} repeat")
        return self


def _finite_or_none(value: float | None) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def metric_stats(values: Iterable[float | None]) -> MetricStat:
    """Mean and sample std (ddof = 1; 0.0 for a single value; None for none) of the finite
    ``values``; None, NaN and +-inf are left out of both but kept (as None) in ``values``."""
    kept = [_finite_or_none(v) for v in values]
    finite = np.asarray([v for v in kept if v is not None], dtype=np.float64)
    n = int(finite.size)
    if n == 0:
        return MetricStat(mean=None, std=None, n=0, values=kept)
    std = float(np.std(finite, ddof=1)) if n > 1 else 0.0
    return MetricStat(mean=float(np.mean(finite)), std=std, n=n, values=kept)


def _group_of(run: SubRun) -> str:
    return run.group or ALL_GROUP


def summarize(protocol: str, runs: Sequence[SubRun], class_names: Sequence[str] | None = None) -> SummaryFile:
    """The :class:`SummaryFile` of ``runs``: groups in order of first appearance (runs without
    a group form ``"all"``), metrics in order of first appearance; a run that lacks a metric
    counts as None for it."""
    members: dict[str, list[SubRun]] = {}
    for run in runs:
        members.setdefault(_group_of(run), []).append(run)
    groups: dict[str, dict[str, MetricStat]] = {}
    for group, group_runs in members.items():
        names = list(dict.fromkeys(name for run in group_runs for name in run.test))
        groups[group] = {name: metric_stats(run.test.get(name) for run in group_runs) for name in names}
    return SummaryFile(
        protocol=protocol, runs=list(runs), groups=groups,
        class_names=list(class_names) if class_names is not None else None,
    )


# ---------------------------------------------------------------------------------------------
# reading and writing

_Model = TypeVar("_Model", bound=BaseModel)


def _where(loc: tuple[int | str, ...]) -> str:
    """``("evaluations", 0, "metrics", "x")`` -> ``evaluations[0].metrics.x``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "the top level"


def _schema_problem(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = _where(tuple(first["loc"]))
    if first["type"] == "missing":
        problem = f"missing key '{where}'"
    elif first["type"] == "extra_forbidden":
        problem = f"unknown key '{where}'"
    else:
        problem = f"bad value at '{where}' ({first['msg']})"
    more = exc.error_count() - 1
    return problem + (f" (and {more} more problem{'s' if more > 1 else ''})" if more > 0 else "")


def _read(path: Path, model: type[_Model], writer: str) -> _Model:
    if not path.is_file():
        raise DataError(f"'{path}' does not exist; {writer} writes it: check the folder or run it first")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise DataError(
            f"'{path}' is {size / 2**20:.0f} MiB, over the {MAX_FILE_BYTES // 2**20} MiB limit of a "
            f"{path.name}; it is not a file {writer} wrote: move it away and re-run"
        )
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise DataError(f"'{path}' is not UTF-8 text ({exc.reason}); {writer} writes it again: re-run") from None
    except json.JSONDecodeError as exc:
        raise DataError(
            f"'{path}' is not valid JSON ({exc.msg} at line {exc.lineno}); the run may have been interrupted "
            f"while writing it: re-run {writer}"
        ) from None
    if not isinstance(data, dict):
        raise DataError(f"'{path}' must hold a JSON object, not {type(data).__name__}; re-run {writer}")
    try:
        return model.model_validate(data, strict=True)
    except ValidationError as exc:
        raise DataError(
            f"'{path}' does not match the {path.name} schema: {_schema_problem(exc)}; it was written by "
            f"another version of deepmetric or edited: re-run {writer}"
        ) from None


def _file_in(folder_or_file: str | Path, name: str) -> Path:
    path = Path(folder_or_file)
    return path / name if path.is_dir() else path


def read_metrics(run_dir: str | Path) -> MetricsFile:
    """The :class:`MetricsFile` of ``run_dir/metrics.json`` (``run_dir`` may also be the file).

    Raises :class:`DataError` (one line, naming the file) for a missing, oversized, non-JSON or
    off-schema file.
    """
    return _read(_file_in(run_dir, METRICS_FILE), MetricsFile, "`deepmetric train`")


def read_summary(run_dir: str | Path) -> SummaryFile:
    """The :class:`SummaryFile` of ``run_dir/summary.json`` (``run_dir`` may also be the file).

    Raises :class:`DataError` like :func:`read_metrics`.
    """
    return _read(_file_in(run_dir, SUMMARY_FILE), SummaryFile, "the experiment")


def _jsonable(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def write_run_file(model: BaseModel, path: str | Path) -> Path:
    """Write ``model`` as indented JSON to ``path`` atomically (temporary file in the same
    folder, fsync, ``os.replace``): a crash leaves the previous file intact. Non-finite floats
    become ``null``; the file gets mode ``0o666 & ~umask``. Returns ``path``."""
    path = Path(path)
    text = json.dumps(_jsonable(model.model_dump(mode="json")), indent=2, allow_nan=False) + "\n"
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))
    return path


#: file name of a run's calibration, inside the run folder
CALIBRATION_FILE = "calibration.json"


class CalibrationFile(BaseModel):
    """``RUN/calibration.json``: the matching threshold and what it achieved on the validation pairs."""

    model_config = ConfigDict(extra="forbid")

    metric: Literal["cosine", "euclidean"]
    #: how a pair is accepted: "similarity >= threshold" (cosine) or "distance <= threshold"
    accept: Literal["similarity >= threshold", "distance <= threshold"]
    threshold: float
    target: Literal["far", "precision"]
    target_value: float
    #: rates at the threshold on the validation pairs
    far: float
    tar: float
    frr: float
    precision: float
    recall: float
    split: str
    checkpoint: str
    n_items: int
    n_classes: int
    n_genuine_pairs: int
    n_impostor_pairs: int
    n_pairs_used: int
    pairs_sampled: bool
    max_pairs: int
    seed: int
    notes: list[str] = []


def load_calibration(source: str | Path) -> CalibrationFile:
    """The :class:`CalibrationFile` of a run folder (``RUN/calibration.json``) or of the file itself.

    One-line :class:`DataError` for a missing, non-JSON or off-schema file.
    """
    path = Path(source)
    if path.is_file() and path.suffix == ".pt":  # a checkpoint inside RUN/checkpoints/
        path = path.parent.parent
    if path.is_dir():
        path = path / CALIBRATION_FILE
    return _read(path, CalibrationFile, "`deepmetric calibrate RUN`")
