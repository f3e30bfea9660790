"""Typed run-folder files (deepmetric.run_files): schema round trips, one-line errors, statistics."""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from deepmetric.errors import DataError
from deepmetric.run_files import (
    MAX_FILE_BYTES,
    Baseline,
    Best,
    Evaluation,
    MetricsFile,
    SubRun,
    SummaryFile,
    metric_stats,
    read_metrics,
    read_summary,
    summarize,
    write_run_file,
)


def fit_metrics_dict(final: bool = True) -> dict[str, Any]:
    """metrics.json the way fit's ``write_metrics`` builds it (finite values only, NaN -> None)."""
    evaluations = [
        {"step": 0, "split": "val", "metrics": {"recall@1": 0.5, "map@r": 0.2, "nmi": None, "n_queries": 40.0}},
        {"step": 100, "split": "val", "metrics": {"recall@1": 0.7, "map@r": 0.3, "nmi": 0.6, "n_queries": 40.0}},
    ]
    summary: dict[str, Any] = {
        "selection_split": "val",
        "steps": 100,
        "total_steps": 100,
        "stopped_early": False,
        "evaluations": evaluations,
        "baseline": {"step": 0, "split": "test", "metrics": {"recall@1": 0.4, "map@r": 0.1}},
        "best": {"step": 100, "metric": "map@r", "value": 0.3},
    }
    if final:
        summary.update({"test_last": {"recall@1": 0.75}, "test": {"recall@1": 0.8, "map@r": 0.35}, "test_step": 100})
    return summary


def write(path: Path, obj: Any) -> Path:
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


@pytest.mark.parametrize("final", [False, True])
def test_fit_metrics_round_trip(tmp_path: Path, final: bool) -> None:
    raw = fit_metrics_dict(final)
    write(tmp_path / "metrics.json", raw)
    m = read_metrics(tmp_path)
    assert m.evaluations[1] == Evaluation(step=100, split="val", metrics=raw["evaluations"][1]["metrics"])
    assert m.baseline == Baseline(step=0, split="test", metrics={"recall@1": 0.4, "map@r": 0.1})
    assert m.best == Best(step=100, metric="map@r", value=0.3)
    assert m.protocol == "retrieval" and m.warnings == [] and m.class_names is None
    assert (m.test is not None) == final
    # written back and read again: the same model, and the same JSON keys as fit wrote plus the defaults
    write_run_file(m, tmp_path / "again" / "metrics.json")
    assert read_metrics(tmp_path / "again") == m
    again = json.loads((tmp_path / "again" / "metrics.json").read_text(encoding="utf-8"))
    assert {k: again[k] for k in raw} == raw


def test_read_metrics_accepts_the_file_path_and_optional_fields(tmp_path: Path) -> None:
    raw = {**fit_metrics_dict(), "class_names": ["cat", "dog"], "warnings": ["validation saturated"],
           "protocol": "few_shot", "baseline": None, "best": None}
    m = read_metrics(write(tmp_path / "m.json", raw))
    assert m.class_names == ["cat", "dog"] and m.warnings == ["validation saturated"] and m.protocol == "few_shot"


def test_non_finite_values_are_written_as_null(tmp_path: Path) -> None:
    m = MetricsFile(selection_split="val", steps=np.int64(3), total_steps=3, stopped_early=False,
                    evaluations=[Evaluation(step=0, split="val", metrics={"a": float("nan"), "b": np.float32(0.5)})],
                    baseline=None, best=Best(step=0, metric="a", value=float("-inf")), test={"a": float("inf")})
    path = write_run_file(m, tmp_path / "metrics.json")
    text = path.read_text(encoding="utf-8")
    assert "NaN" not in text and "Infinity" not in text
    back = read_metrics(path)
    assert back.evaluations[0].metrics == {"a": None, "b": 0.5}
    assert back.best is not None and back.best.value is None and back.test == {"a": None}


def test_write_run_file_honours_the_umask_and_replaces_atomically(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = write_run_file(MetricsFile.model_validate(fit_metrics_dict()), tmp_path / "metrics.json")
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        os.umask(0o077)
        write_run_file(MetricsFile.model_validate(fit_metrics_dict(final=False)), path)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    finally:
        os.umask(old)
    assert read_metrics(path).test is None
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary file left


def one_line_error(path: Path, *fragments: str) -> str:
    with pytest.raises(DataError) as info:
        read_metrics(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_bad_metrics_files_give_one_line_errors(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    path.write_text("{broken", encoding="utf-8")
    one_line_error(path, "not valid JSON")
    path.write_bytes(b"\xff\xfe{}")
    one_line_error(path, "not UTF-8")
    write(path, [1, 2])
    one_line_error(path, "JSON object")
    raw = fit_metrics_dict()
    del raw["selection_split"]
    one_line_error(write(path, raw), "missing key 'selection_split'")
    raw = fit_metrics_dict()
    raw["evaluations"][1]["metrics"]["map@r"] = "0.3"  # a string is never a number
    one_line_error(write(path, raw), "evaluations[1].metrics.map@r")
    raw = fit_metrics_dict()
    raw["steps"] = 100.0
    one_line_error(write(path, raw), "'steps'")
    raw = fit_metrics_dict()
    raw["best"]["extra"] = 1
    one_line_error(write(path, raw), "unknown key 'best.extra'")
    one_line_error(tmp_path / "nope.json", "does not exist")


def test_huge_file_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    with path.open("wb") as fh:
        fh.truncate(MAX_FILE_BYTES + 1)  # sparse: not actually written
    one_line_error(path, "64 MiB")
    with pytest.raises(DataError, match="64 MiB"):
        read_summary(path)


@pytest.mark.parametrize(
    "values",
    [[0.5, 0.7, 0.9], [0.1, None, 0.4, float("nan"), 0.8], [3.0], [None, float("nan")], [1.0, float("inf"), 2.0]],
)
def test_metric_stats_by_hand(values: list[float | None]) -> None:
    s = metric_stats(values)
    finite = [v for v in values if v is not None and math.isfinite(v)]
    assert s.n == len(finite)
    assert s.values == [v if v is not None and math.isfinite(v) else None for v in values]
    if not finite:
        assert s.mean is None and s.std is None
        return
    mean = sum(finite) / len(finite)
    std = math.sqrt(sum((v - mean) ** 2 for v in finite) / (len(finite) - 1)) if len(finite) > 1 else 0.0
    assert s.mean == pytest.approx(mean) and s.std == pytest.approx(std)
    assert s.mean == pytest.approx(np.mean(finite))
    if len(finite) > 1:
        assert s.std == pytest.approx(np.std(finite, ddof=1))


def sub(name: str, group: str, **test: float | None) -> SubRun:
    return SubRun(name=name, run_dir=name, params={"run": name}, group=group, test=test, test_step=10)


def test_summarize_groups_and_round_trip(tmp_path: Path) -> None:
    runs = [sub("a", "metric, n=1", acc=0.5, f1=0.4), sub("b", "", acc=0.6), sub("c", "metric, n=1", acc=0.7),
            sub("d", "", acc=None)]
    s = summarize("speech_transfer", runs, class_names=["x", "y"])
    assert list(s.groups) == ["metric, n=1", "all"]
    g = s.groups["metric, n=1"]
    assert g["acc"].mean == pytest.approx(0.6) and g["acc"].std == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert g["f1"].values == [0.4, None] and g["f1"].n == 1 and g["f1"].std == 0.0
    assert s.groups["all"]["acc"].n == 1 and s.groups["all"]["acc"].values == [0.6, None]
    write_run_file(s, tmp_path / "summary.json")
    assert read_summary(tmp_path) == s
    assert isinstance(read_summary(tmp_path / "summary.json"), SummaryFile)


def test_bad_summary_files(tmp_path: Path) -> None:
    s = summarize("folds", [sub("fold_0", "", acc=0.5)])
    raw = json.loads(s.model_dump_json())
    raw["runs"][0]["test_step"] = "10"
    write(tmp_path / "summary.json", raw)
    with pytest.raises(DataError, match=r"runs\[0\]\.test_step") as info:
        read_summary(tmp_path)
    assert "\n" not in str(info.value)
    raw = json.loads(s.model_dump_json())
    raw["runs"].append(raw["runs"][0])
    write(tmp_path / "summary.json", raw)
    with pytest.raises(DataError, match="fold_0 repeat"):
        read_summary(tmp_path)
