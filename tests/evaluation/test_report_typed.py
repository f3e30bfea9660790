"""The report on typed run files: skipped pieces are notes, classes are names, protocol pages."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from deepmetric.errors import DataError
from deepmetric.evaluation import plots
from deepmetric.evaluation.report import confusion_matrix, names_from_paths, write_report
from deepmetric.run_files import SubRun, summarize, write_run_file

CLASSES = ["cat", "dog", "owl"]


def make_run(root: Path, class_names: list[str] | None = CLASSES, folders: bool = False) -> Path:
    """A fit-shaped run folder: config.yaml, log.csv, metrics.json, test_embeddings.npz (images
    in one folder per class when ``folders``)."""
    run = root / "run"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("seed: 0\n", encoding="utf-8")
    (run / "log.csv").write_text("step,epoch,loss,lr,seconds\n1,0,1.0,0.001,0.1\n2,0,0.8,0.001,0.2\n", encoding="utf-8")
    metrics: dict[str, Any] = {
        "selection_split": "val", "steps": 2, "total_steps": 2, "stopped_early": False,
        "evaluations": [{"step": s, "split": "val", "metrics": {"recall@1": 0.3 + s / 10, "map@r": None}} for s in (0, 2)],
        "baseline": {"step": 0, "split": "test", "metrics": {"recall@1": 0.3}},
        "best": {"step": 2, "metric": "recall@1", "value": 0.5},
        "test": {"recall@1": 0.8}, "test_step": 2, "warnings": ["validation saturated"],
    }
    if class_names is not None:
        metrics["class_names"] = class_names
    (run / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    labels = np.repeat(np.arange(3), 3)
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(3, 4))[labels] + 0.05 * rng.normal(size=(9, 4))
    paths = []
    for i, y in enumerate(labels):
        folder = root / "images" / (CLASSES[y] if folders else "")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 8, 3), 40 * int(y), np.uint8)).save(folder / f"{i}.png")
        paths.append(str(folder / f"{i}.png"))
    np.savez(run / "test_embeddings.npz", embeddings=emb.astype(np.float32), labels=labels, paths=np.asarray(paths))
    return run


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The class_names each plot function was handed (the plots still get drawn)."""
    seen: dict[str, Any] = {}
    for name in ("plot_projection", "plot_retrieval_grid", "plot_confusion_matrix"):
        original = getattr(plots, name)

        def spy(*args: Any, _original: Any = original, _name: str = name, **kwargs: Any) -> Path:
            seen[_name] = kwargs.get("class_names", args[2] if _name == "plot_confusion_matrix" and len(args) > 2 else None)
            return _original(*args, **kwargs)

        monkeypatch.setattr(plots, name, spy)
    return seen


def test_broken_pieces_become_notes_not_crashes(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    (run / "config.yaml").write_text("seed: [unclosed\n", encoding="utf-8")
    (run / "test_predictions.npz").write_bytes(b"not a zip")
    (run / "test_embeddings.npz").write_bytes(b"not a zip either")
    (run / "log.csv").write_bytes(b"step,loss\n\xff\xfe\n")
    html = write_report(run).read_text(encoding="utf-8")
    notes = re.findall(r"<li class='note'>(.*?)</li>", html)
    assert any(n.startswith("config.yaml could not be used (ConfigError") for n in notes), notes
    assert any(n.startswith("test_predictions.npz could not be read") for n in notes), notes
    assert any(n.startswith("test_embeddings.npz could not be read") for n in notes), notes
    assert any(n.startswith("log.csv could not be read (UnicodeDecodeError") for n in notes), notes
    assert "seed: [unclosed" in html  # the broken config is still shown as text
    assert "Warning: validation saturated" in html and "0.8000" in html


def test_invalid_config_values_are_a_note(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    (run / "config.yaml").write_text("trainer:\n  stepz: 3\n", encoding="utf-8")
    html = write_report(run).read_text(encoding="utf-8")
    assert "config.yaml could not be used (ConfigError: unknown config key" in html
    assert (run / "plots" / "retrieval.png").is_file()  # drawn with the default similarity


def test_corrupt_metrics_json_is_still_an_error(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    (run / "metrics.json").write_text('{"steps": "x"}', encoding="utf-8")
    with pytest.raises(DataError, match="metrics.json' does not match the metrics.json schema: missing key 'selection_split'"):
        write_report(run)


def test_class_names_from_metrics_in_every_plot_and_table(tmp_path: Path, captured: dict[str, Any]) -> None:
    run = make_run(tmp_path)
    np.savez(run / "test_predictions.npz", labels=np.array([0, 1, 2, 2]), predictions=np.array([0, 1, 1, 2]))
    html = write_report(run).read_text(encoding="utf-8")
    assert captured["plot_projection"] == CLASSES
    assert captured["plot_retrieval_grid"] == CLASSES
    assert captured["plot_confusion_matrix"] == CLASSES
    section = html[html.index("<h2>Confusion matrix</h2>"):]
    assert "<td>owl</td><td>2</td><td>1</td><td>0.5000</td>" in section
    assert "<td>cat</td><td>1</td><td>1</td><td>1.0000</td>" in section


def test_class_names_from_predictions_then_from_folders(tmp_path: Path, captured: dict[str, Any]) -> None:
    run = make_run(tmp_path / "a", class_names=None)
    np.savez(run / "test_predictions.npz", labels=np.array([0, 1]), predictions=np.array([1, 1]),
             class_names=np.array(["ant", "bee", "cow"]))
    html = write_report(run).read_text(encoding="utf-8")
    assert captured["plot_confusion_matrix"] == ["ant", "bee", "cow"]
    assert "<td>cow</td><td>0</td><td>0</td><td>-</td>" in html  # a class with no test item still has its row
    run = make_run(tmp_path / "b", class_names=None, folders=True)
    write_report(run)
    assert captured["plot_retrieval_grid"] == CLASSES


def test_names_from_paths_only_when_consistent() -> None:
    labels = np.array([0, 0, 1])
    assert names_from_paths(labels, ["d/cat/1.png", "d/cat/2.png", "d/dog/3.png"]) == ["cat", "dog"]
    assert names_from_paths(labels, ["d/cat/1.png", "d/dog/2.png", "d/dog/3.png"]) is None  # class 0 split
    assert names_from_paths(labels, ["a/x.png", "a/y.png", "a/z.png"]) is None  # one folder for all
    assert names_from_paths(np.array(["a", "b"]), ["x/1", "y/2"]) is None  # labels are names already


def test_class_label_and_confusion_matrix() -> None:
    assert plots.class_label(np.int64(1), CLASSES) == "dog"
    assert plots.class_label(7, CLASSES) == "7" and plots.class_label("1", CLASSES) == "1"
    assert plots.class_label(0, ["a" * 40]).endswith("\u2026") and len(plots.class_label(0, ["a" * 40])) == 22
    assert confusion_matrix(np.array([0, 1, 1]), np.array([1, 1, 0]), 3).tolist() == [[0, 1, 0], [1, 1, 0], [0, 0, 0]]
    assert confusion_matrix(np.array([0, 3]), np.array([0, 0]), 3) is None  # label beyond the class names
    assert confusion_matrix(np.array([0.0]), np.array([0.0])) is None


def test_figures_shown_generically_with_captions(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    (run / "figures").mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(run / "figures" / "roc_curves.png")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(run / "figures" / "heatmaps.png")
    (run / "figures" / "roc_curves.txt").write_text("One class against the rest.\n", encoding="utf-8")
    html = write_report(run).read_text(encoding="utf-8")
    assert "<h2>Roc curves</h2><p class='note'>One class against the rest.</p><img src='figures/roc_curves.png'" in html
    assert "<h2>Heatmaps</h2><p class='note'></p><img src='figures/heatmaps.png'" in html


def make_protocol(root: Path) -> Path:
    parent = root / "folds"
    runs = []
    for i, (acc, r1) in enumerate([(0.5, 0.6), (0.7, None), (0.9, 0.8)]):
        name = f"fold_{i}"
        (parent / name).mkdir(parents=True)
        if i < 2:
            (parent / name / "report.html").write_text("<html></html>", encoding="utf-8")
        runs.append(SubRun(name=name, run_dir=name, params={"fold": i}, test={"accuracy": acc, "recall@1": r1,
                                                                              "n_queries": 10.0}, test_step=5 * i))
    write_run_file(summarize("skin_lesions", runs, class_names=["nevus", "melanoma"]), parent / "summary.json")
    return parent


def test_protocol_page_has_a_row_per_run_and_mean_std(tmp_path: Path) -> None:
    parent = make_protocol(tmp_path)
    html = write_report(parent).read_text(encoding="utf-8")
    runs = html[html.index("<h2>Runs</h2>"):]
    rows = re.findall(r"<tr><td>(.*?)</td>", runs.split("</table>")[0])
    assert rows == ["<a href='fold_0/report.html'>fold_0</a>", "<a href='fold_1/report.html'>fold_1</a>", "fold_2"]
    assert "<td>fold=1</td><td>5</td><td>0.6000</td>" not in runs  # recall@1 of fold_1 is undefined ...
    assert "<td>fold=1</td><td>5</td><td>-</td><td>0.7000</td>" in runs  # ... shown as '-', before accuracy
    acc_std = np.std([0.5, 0.7, 0.9], ddof=1)
    r1_std = np.std([0.6, 0.8], ddof=1)
    assert f"<td>all</td><td>3</td><td>0.7000 ± {r1_std:.4f} (n=2)</td><td>0.7000 ± {acc_std:.4f}</td>" in html
    assert (f"{r1_std:.4f}", f"{acc_std:.4f}") == ("0.1414", "0.2000")
    assert "n_queries" not in html  # counts are not metrics
    assert "nevus, melanoma" in html
    assert "run fold_2 has no report.html yet" in html


def test_protocol_page_corrupt_summary(tmp_path: Path) -> None:
    parent = tmp_path / "p"
    parent.mkdir()
    (parent / "summary.json").write_text('{"protocol": "x"}', encoding="utf-8")
    with pytest.raises(DataError, match="missing key 'runs'"):
        write_report(parent)
