"""End to end: `deepmetric demo --quick` trains a tiny model on the embedded Omniglot data, then
`embed`, `search` and `eval` use the run folder. One short training run shared by the tests."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from deepmetric.cli import main
from deepmetric.data.omniglot import embedded_omniglot_zip

pytestmark = pytest.mark.slow  # ~15 s of CPU; still runs in CI


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "run"
    assert main(["demo", "--quick", "--out", str(out), "--no-progress", "--threads", "1"]) == 0
    return out


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 Omniglot characters x 3 drawings as PNG files in class folders."""
    root = tmp_path_factory.mktemp("images")
    with zipfile.ZipFile(embedded_omniglot_zip()) as z:
        names = sorted(n for n in z.namelist() if n.endswith(".png"))
        chars = sorted({n.rsplit("/", 1)[0] for n in names})[:3]
        for i, char in enumerate(chars):
            (root / f"char{i}").mkdir()
            for member in [n for n in names if n.startswith(char + "/")][:3]:
                (root / f"char{i}" / member.rsplit("/", 1)[1]).write_bytes(z.read(member))
    return root


def test_demo_writes_a_complete_run_folder(quick_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("config.yaml", "log.csv", "metrics.json", "report.html", "test_embeddings.npz",
                 "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (quick_run / name).is_file(), name
    for png in ("loss.png", "recall_at_k.png", "projection.png", "retrieval.png"):
        assert (quick_run / "plots" / png).is_file(), png
    metrics = json.loads((quick_run / "metrics.json").read_text())
    assert {"recall@1", "map@r", "nmi"} <= set(metrics["test"])
    assert {"recall@1", "map@r", "nmi"} <= set(metrics["baseline"]["metrics"])


def test_embed_search_and_eval_on_the_run(quick_run: Path, image_folder: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    gallery = tmp_path / "gallery.npz"
    assert main(["embed", str(quick_run), str(image_folder), "-o", str(gallery), "--no-progress"]) == 0
    data = np.load(gallery)
    assert data["embeddings"].shape[0] == 9 and sorted(set(data["labels"].tolist())) == ["char0", "char1", "char2"]
    capsys.readouterr()

    query = sorted((image_folder / "char1").iterdir())[0]
    assert main(["search", str(gallery), str(query), "--model", str(quick_run), "-k", "3", "--json", "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out)
    hits = result[0]["neighbours"]
    assert len(hits) == 3
    assert hits[0]["path"] == str(query)  # the query itself is in the gallery: similarity 1
    assert hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]

    assert main(["search", str(gallery), str(query), "--model", str(quick_run), "--no-progress"]) == 0
    table = capsys.readouterr().out
    assert "rank" in table and str(query) in table

    assert main(["eval", str(quick_run), "--data", str(image_folder), "--json", "--no-progress"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert 0.0 <= metrics["recall@1"] <= 1.0 and metrics["n_queries"] == 9


def test_eval_refuses_a_single_image_class(quick_run: Path, image_folder: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    data = tmp_path / "data"
    shutil.copytree(image_folder, data)
    for extra in sorted((data / "char2").iterdir())[1:]:
        extra.unlink()
    code = main(["eval", str(quick_run), "--data", str(data), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and "char2" in err and "single image" in err and "Traceback" not in err


def test_embed_file_that_is_not_an_image(quick_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake = tmp_path / "cls" / "broken.png"
    fake.parent.mkdir()
    fake.write_bytes(b"this is not a png")
    code = main(["embed", str(quick_run), str(fake), "-o", str(tmp_path / "e.npz"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and "broken.png" in err and "Traceback" not in err
    assert len([line for line in err.splitlines() if "error:" in line]) == 1


def test_quick_demo_shows_a_real_improvement(quick_run: Path) -> None:
    metrics = json.loads((quick_run / "metrics.json").read_text())
    assert metrics["test_step"] == metrics["steps"] == 40  # the final weights, not the untrained network
    assert metrics["test"]["recall@1"] > metrics["baseline"]["metrics"]["recall@1"] + 0.01


def test_eval_on_a_csv_manifest_and_a_nested_tree(quick_run: Path, image_folder: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    rows = ["path,label"] + [f"{p.relative_to(image_folder).as_posix()},{p.parent.name}"
                             for p in sorted(image_folder.rglob("*.png"))]
    manifest = image_folder / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n")
    assert main(["eval", str(quick_run), "--data", str(manifest), "--json", "--no-progress"]) == 0
    by_csv = json.loads(capsys.readouterr().out)
    manifest.unlink()
    assert main(["eval", str(quick_run), "--data", str(image_folder), "--json", "--no-progress"]) == 0
    by_folder = json.loads(capsys.readouterr().out)
    assert by_csv == by_folder  # the same images and labels, two ways of listing them
    import shutil

    nested = tmp_path / "nested"
    shutil.copytree(image_folder, nested / "group")
    assert main(["eval", str(quick_run), "--data", str(nested), "--class-depth", "2", "--json", "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out) == by_folder
