"""Calibrated matching: threshold choice against brute force on synthetic embeddings, the
match / no match / unknown decisions, calibration.json round trip, and `deepmetric calibrate` +
`deepmetric search --match` on a tiny trained toy run (one-line errors included)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from deepmetric.calibration import (
    CALIBRATION_FILE,
    CalibrationFile,
    calibrate_embeddings,
    calibrate_run,
    load_calibration,
    match,
)
from deepmetric.cli import main
from deepmetric.errors import ConfigError, DataError
from deepmetric.run_files import write_run_file

TOY_DIR = Path(__file__).resolve().parent / "training"


def _blobs(n_classes: int = 6, per_class: int = 8, d: int = 5, spread: float = 0.6, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_classes, d)) * 2
    y = np.repeat(np.arange(n_classes), per_class)
    return centers[y] + spread * rng.normal(size=(y.size, d)), y


def _all_pairs(x, y, metric):
    gen, imp = [], []
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            if metric == "cosine":
                s = x[i] @ x[j] / (np.linalg.norm(x[i]) * np.linalg.norm(x[j]))
            else:
                s = np.linalg.norm(x[i] - x[j])
            (gen if y[i] == y[j] else imp).append(s)
    return np.array(gen), np.array(imp)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_far_and_precision_targets_match_brute_force(metric) -> None:
    x, y = _blobs(spread=1.2)
    gen, imp = _all_pairs(x, y, metric)
    # the loops' scores differ from the library's in the last bits: accept within 1e-9
    accept = (lambda s, t: s >= t - 1e-9) if metric == "cosine" else (lambda s, t: s <= t + 1e-9)
    candidates = np.unique(np.r_[gen, imp])
    rates = [(t, accept(gen, t).mean(), accept(imp, t).mean()) for t in candidates]
    for far in (0.01, 0.05, 0.2):
        cal = calibrate_embeddings(x, y, metric=metric, far=far)
        best = max(tar for _, tar, fa in rates if fa <= far)
        assert cal.far <= far and cal.tar == pytest.approx(best, abs=1e-12)
        assert accept(gen, cal.threshold).mean() == pytest.approx(cal.tar, abs=1e-12)
        assert accept(imp, cal.threshold).mean() == pytest.approx(cal.far, abs=1e-12)
        assert cal.recall == cal.tar and cal.frr == pytest.approx(1 - cal.tar)
    for target in (0.6, 0.9):
        cal = calibrate_embeddings(x, y, metric=metric, precision=target)
        prec = [(tar, (accept(gen, t).sum()) / (accept(gen, t).sum() + accept(imp, t).sum())) for t, tar, _ in rates]
        best = max(tar for tar, p in prec if p >= target and tar > 0)
        assert cal.precision >= target and cal.recall == pytest.approx(best, abs=1e-12)
        tp, fp = accept(gen, cal.threshold).sum(), accept(imp, cal.threshold).sum()
        assert cal.precision == pytest.approx(tp / (tp + fp), abs=1e-12)
    assert cal.metric == metric and cal.n_genuine_pairs == gen.size and cal.n_impostor_pairs == imp.size


def test_calibration_errors_are_one_line() -> None:
    x, y = _blobs()
    for bad in (0.0, 1.0, 1.5, -1e-3):
        with pytest.raises(ConfigError, match="between 0 and 1") as info:
            calibrate_embeddings(x, y, far=bad)
        assert "\n" not in str(info.value)
        with pytest.raises(ConfigError, match="between 0 and 1"):
            calibrate_embeddings(x, y, precision=bad)
    with pytest.raises(DataError, match="no genuine pair") as info:
        calibrate_embeddings(x[:6], np.arange(6))
    assert "\n" not in str(info.value)
    # overlapping classes: no threshold is 100 % precise
    xo, yo = _blobs(spread=20.0, seed=3)
    with pytest.raises(DataError, match="no threshold reaches pair precision"):
        calibrate_embeddings(xo, yo, precision=0.999)


def test_file_round_trip_and_bad_file(tmp_path: Path) -> None:
    x, y = _blobs()
    cal = calibrate_embeddings(x, y, far=0.05, checkpoint="best")
    write_run_file(cal, tmp_path / CALIBRATION_FILE)
    assert load_calibration(tmp_path) == cal == load_calibration(tmp_path / CALIBRATION_FILE)
    (tmp_path / CALIBRATION_FILE).write_text(json.dumps({**cal.model_dump(), "extra": 1}))
    with pytest.raises(DataError, match="unknown key 'extra'"):
        load_calibration(tmp_path)
    with pytest.raises(DataError, match="deepmetric calibrate"):
        load_calibration(tmp_path / "nowhere")


def _cal(metric: str, threshold: float) -> CalibrationFile:
    x, y = _blobs()
    return calibrate_embeddings(x, y, metric=metric, far=0.1).model_copy(update={"threshold": threshold})


def test_match_no_match_unknown() -> None:
    gallery = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    labels = ["ann", "bob", "bob"]
    queries = np.array([[0.5, 0.0], [9.0, 0.5], [30.0, 30.0], [0.4, 0.3], [5.0, 0.0]])
    cal = _cal("euclidean", 2.0)
    plain = match(queries, gallery, labels, cal)
    assert [r.decision for r in plain] == ["match", "match", "unknown", "match", "unknown"]
    assert [r.label for r in plain[:2]] == ["ann", "bob"] and plain[1].index == 1
    assert plain[0].score == pytest.approx(0.5)
    claims = ["ann", "ann", "ann", "carl", "bob"]
    claimed = match(queries, gallery, labels, cal, claimed_labels=claims)
    # q1 resembles bob but claims ann; q3 claims a label absent from the gallery
    assert [r.decision for r in claimed] == ["match", "no match", "unknown", "no match", "unknown"]
    assert claimed[1].claimed_score == pytest.approx(np.hypot(9.0, 0.5)) and claimed[3].claimed_score is None
    # cosine: similarity >= threshold; torch input
    cos = match(torch.tensor([[1.0, 0.1], [-1.0, -1.0]]), torch.tensor(gallery[1:]), labels[1:], _cal("cosine", 0.9))
    assert [r.decision for r in cos] == ["match", "unknown"]
    with pytest.raises(DataError, match="same width"):
        match(np.zeros((1, 3)), gallery, labels, cal)


# ----------------------------------------------------------------------------- trained toy run


@pytest.fixture
def toy_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Path:
    monkeypatch.syspath_prepend(str(TOY_DIR))
    from toy_training import write_toy_recipe  # type: ignore[import-not-found]

    run = tmp_path / "run"
    assert main(["train", str(write_toy_recipe(tmp_path)), "--out", str(run), "--no-progress"]) == 0
    capsys.readouterr()
    return run


def test_calibrate_and_search_match_on_a_trained_run(toy_run: Path, tmp_path: Path, capsys) -> None:
    code = main(["calibrate", str(toy_run), "--far", "0.1", "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "precision" in out and "recall (TAR)" in out and "calibration written to" in err
    cal = load_calibration(toy_run)
    assert cal.split == "val" and cal.target == "far" and cal.far <= 0.1 and cal.checkpoint in ("best", "last")
    assert cal.metric == "cosine" and cal.accept == "similarity >= threshold"
    # the Python API gives the same calibration without writing
    again, path = calibrate_run(toy_run, far=0.1, write=False)
    assert again == cal and path == toy_run / CALIBRATION_FILE

    # search --match with the run's own test embeddings as gallery and queries
    npz = np.load(toy_run / "test_embeddings.npz")
    emb, labels = npz["embeddings"], npz["labels"]
    from deepmetric.embeddings_io import save_embeddings

    gallery = save_embeddings(tmp_path / "gallery.npz", emb[::2], labels[::2], [f"g{i}" for i in range(len(emb[::2]))])
    far_away = -emb[1::2] * 1.0  # opposite directions: cosine ~ -1 to their own class
    queries = save_embeddings(tmp_path / "queries.npz", np.r_[emb[1::2], far_away],
                              np.r_[labels[1::2], labels[1::2]], None)
    code = main(["search", str(gallery), str(queries), "--model", str(toy_run), "--match", "--json", "--claims"])
    out, err = capsys.readouterr()
    assert code == 0, err
    rows = json.loads(out)
    assert len(rows) == 2 * len(emb[1::2])
    assert {r["decision"] for r in rows} <= {"match", "no match", "unknown"}
    expected = match(np.r_[emb[1::2], far_away], emb[::2], [str(v) for v in labels[::2]], cal,
                     claimed_labels=[str(v) for v in np.r_[labels[1::2], labels[1::2]]])
    assert [r["decision"] for r in rows] == [e.decision for e in expected]
    assert any(r["decision"] == "match" for r in rows)
    code = main(["search", str(gallery), str(queries), "--calibration", str(toy_run / CALIBRATION_FILE), "--match"])
    out, err = capsys.readouterr()
    assert code == 0 and "decision" in out and "threshold: similarity >=" in err


def test_cli_one_line_errors(toy_run: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    def one_line_error(args: list[str], needle: str) -> None:
        code = main(args)
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if "error:" in line]
        assert code == 1 and len(lines) == 1 and needle in lines[0] and "Traceback" not in err, err

    one_line_error(["calibrate", str(toy_run), "--far", "1.5", "--no-progress"], "between 0 and 1")
    one_line_error(["calibrate", str(toy_run), "--precision", "0", "--no-progress"], "between 0 and 1")
    # a run without a validation split
    no_val = tmp_path / "no_val"
    from toy_training import write_toy_recipe  # type: ignore[import-not-found]  (on sys.path via toy_run)

    recipe = write_toy_recipe(tmp_path, "noval", data__val_fraction=0.0, eval__split="test")
    assert main(["train", str(recipe), "--out", str(no_val), "--no-progress"]) == 0
    capsys.readouterr()
    one_line_error(["calibrate", str(no_val), "--no-progress"], "no validation split")
    # --match without a calibrated run
    npz = np.load(toy_run / "test_embeddings.npz")
    from deepmetric.embeddings_io import save_embeddings

    gallery = save_embeddings(tmp_path / "g.npz", npz["embeddings"], npz["labels"], None)
    one_line_error(["search", str(gallery), str(gallery), "--match"], "--match needs a calibrated run")
    one_line_error(["search", str(gallery), str(gallery), "--match", "--model", str(toy_run)], "deepmetric calibrate")
