"""The three method-evidence scripts (OSM+CAA, Ranked List Loss, Symmetrical Synthesis) run end
to end in ``--quick`` mode on the shared real data and print a table with every method."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"  # ../shared/data relative to the repository root

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"shared data folder {SHARED_DATA} not found"),
]

sys.path.insert(0, str(REPO / "benchmarks"))


def _run(script: str, dataset: str, out: Path, methods: list[str]) -> tuple[str, list[dict]]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), "--quick", "--datasets", dataset,
         "--out", str(out), "--data-root", str(SHARED_DATA), "--methods", *methods],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((out / "evidence.json").read_text())
    return proc.stdout, rows


def _check_rows(rows: list[dict], methods: list[str], dataset: str, metrics: tuple[str, ...]) -> None:
    assert [r["method"] for r in rows] == list(methods)  # one seed: one row per method, in order
    for row in rows:
        assert row["dataset"] == dataset and row["seed"] == 0
        for key in metrics:
            for prefix in ("", "last_", "baseline_"):
                assert 0.0 <= row[f"{prefix}{key}"] <= 1.0, (row["method"], prefix + key)


def _check_table(stdout: str, methods: list[str], dataset: str) -> None:
    assert "QUICK RUN: not evidence." in stdout
    for method in methods:
        # the selected-checkpoint table and the last-step table each have one line per method
        assert stdout.count(f"| {dataset} | {method} | 1 |") == 2, method
    assert stdout.count(f"| {dataset} | untrained network | 1 |") == 2


def test_osm_caa_quick(tmp_path: Path) -> None:
    import evidence_osm_caa

    caa_only = [n for n, m in evidence_osm_caa.METHODS.items() if m["params"].get("use_osm") is False
                and m["params"].get("use_caa") is True]
    assert caa_only, "the comparison must include CAA without OSM"
    methods = [caa_only[0], "OSM + CAA (+ CE)"]  # the two that exercise the attention
    stdout, rows = _run("evidence_osm_caa.py", "olivetti", tmp_path, methods)
    _check_rows(rows, methods, "olivetti", ("recall@1", "map@r"))
    _check_table(stdout, methods, "olivetti")


def test_rll_quick(tmp_path: Path) -> None:
    import evidence_rll

    methods = [m for m in evidence_rll.METHODS if m.startswith("RLL")][:1]
    assert methods and len(evidence_rll.METHODS) >= 3
    stdout, rows = _run("evidence_rll.py", "olivetti", tmp_path, methods)
    _check_rows(rows, methods, "olivetti", ("recall@1", "map@r"))
    _check_table(stdout, methods, "olivetti")


def test_synthesis_quick(tmp_path: Path) -> None:
    import evidence_synthesis

    # every base loss is in the comparison both ways
    with_synthesis = [m for m in evidence_synthesis.METHODS if m.endswith(" + synthesis")]
    assert len(with_synthesis) == 5
    assert all(m.removesuffix(" + synthesis") in evidence_synthesis.METHODS for m in with_synthesis)
    methods = ["contrastive", *with_synthesis]  # the wrapper around each of the five base losses
    stdout, rows = _run("evidence_synthesis.py", "olivetti", tmp_path, methods)
    _check_rows(rows, methods, "olivetti", ("nmi", "f1", "recall@1", "map@r"))
    _check_table(stdout, methods, "olivetti")
    assert "| NMI (%) | F1 (%) | Recall@1 (%) | MAP@R (%) |" in stdout
    # the run's resolved config really has the wrapper on (and off for the plain loss)
    for method in methods:
        slug = "".join(c if c.isalnum() else "_" for c in method).strip("_")
        config = yaml.safe_load((tmp_path / "olivetti" / slug / "seed0" / "config.yaml").read_text())
        assert config["loss"]["synthesis"] == ("symmetrical" if method in with_synthesis else "none"), method
        assert config["sampler"]["k"] == 2  # the paper's K
