"""The ``deepmetric`` command: help texts, recipes, and one-line errors for bad input.

These tests need no trained model: every error is raised before a model is loaded.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from deepmetric.cli import build_parser, main
from deepmetric.errors import DataError
from deepmetric.recipes import PACKAGED_DEMO, find_recipe, list_recipes

SUBCOMMANDS = ["train", "eval", "embed", "search", "index", "report", "recipes", "demo", "calibrate", "export"]


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 1
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err  # informational lines (e.g. "training X -> Y") may precede it
    assert err.rstrip().endswith(lines[0])
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help_with_examples(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert f"deepmetric {command}" in out
    assert "example" in out


def test_top_level_help_lists_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in SUBCOMMANDS:
        assert command in out
    assert set(build_parser()._subparsers._group_actions[0].choices) == set(SUBCOMMANDS)  # type: ignore[union-attr]


def test_recipes_lists_the_demo_with_its_description(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(["recipes"], capsys)
    assert code == 0
    line = next(line for line in out.splitlines() if line.startswith("demo_omniglot"))
    first = PACKAGED_DEMO.read_text().splitlines()[0].lstrip("#").strip()
    assert line.split(None, 1)[1] == first
    for recipe in list_recipes():  # every shipped recipe starts with its description line
        assert recipe.path.read_text().startswith("#"), recipe.path


def test_recipes_load_by_name_and_by_checkout_path() -> None:
    from deepmetric.config import load_config

    by_name = load_config("demo_omniglot")
    assert by_name == load_config(PACKAGED_DEMO) == load_config("recipes/demo_omniglot.yaml")
    assert find_recipe("demo_omniglot") == PACKAGED_DEMO
    names = {r.name for r in list_recipes()}
    assert {"demo_omniglot", "rll_cub200", "reid_mars", "speech_fsdd_transfer", "demal_ph2_cv"} <= names


@pytest.mark.slow
def test_a_plain_wheel_ships_every_recipe_and_the_license(tmp_path: Path) -> None:
    """pip wheel . builds what a plain pip install gets: the recipes must be inside it."""
    import zipfile

    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path),
         str(repo)], capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    wheel = next(tmp_path.glob("deepmetric-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {Path(n).name for n in names if "/assets/recipes/" in n and n.endswith(".yaml")}
    assert shipped == {p.name for p in (repo / "recipes").glob("*.yaml")} and len(shipped) >= 20
    assert any(n.endswith("licenses/LICENSE") or n.endswith("/LICENSE") for n in names)
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert "License-Expression: Apache-2.0" in metadata


def test_config_typo_is_one_line_without_traceback() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "deepmetric", "train", "demo_omniglot", "trainer.stepz=3"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1
    assert_one_line_error(proc.returncode, proc.stderr, "trainer.stepz", "did you mean 'trainer.steps'")
    assert proc.stdout == ""


def test_debug_shows_the_exception(tmp_path: Path) -> None:
    with pytest.raises(DataError):
        main(["--debug", "search", str(tmp_path / "none.npz"), "q.npz"])


def test_unknown_recipe_suggests_closest(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(["train", "demo_omniglott"], capsys)
    assert_one_line_error(code, err, "not found", "demo_omniglot")


def test_missing_data_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "no_such.zip"
    code, _, err = run_main(
        ["train", "demo_omniglot", f"data.root={missing}", "--out", str(tmp_path / "run"), "--no-progress"], capsys
    )
    assert_one_line_error(code, err, str(missing), "does not exist")


def test_embed_bad_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "e.npz")
    code, _, err = run_main(["embed", "anything", str(tmp_path / "nope"), "-o", out], capsys)
    assert_one_line_error(code, err, "does not exist")
    (tmp_path / "empty").mkdir()
    code, _, err = run_main(["embed", "anything", str(tmp_path / "empty"), "-o", out], capsys)
    assert_one_line_error(code, err, "holds no images")
    (tmp_path / "notes.txt").write_text("hello")
    code, _, err = run_main(["embed", "anything", str(tmp_path / "notes.txt"), "-o", out], capsys)
    assert_one_line_error(code, err, "not an image file")
    (tmp_path / "a.png").write_bytes(b"\x89PNG")
    code, _, err = run_main(["embed", str(tmp_path / "no_run"), str(tmp_path / "a.png"), "-o", out], capsys)
    assert_one_line_error(code, err, "not found", "run folder")


def test_search_embeddings_file_that_does_not_match_its_labels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.npz"
    np.savez(bad, embeddings=np.ones((5, 3), np.float32), labels=np.arange(4), paths=np.array(["a"] * 5))
    good = tmp_path / "q.npz"
    np.savez(good, embeddings=np.ones((2, 3), np.float32), labels=np.arange(2))
    code, _, err = run_main(["search", str(bad), str(good)], capsys)
    assert_one_line_error(code, err, "5 embeddings but 4 labels", "deepmetric embed")


def test_search_two_embedding_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from deepmetric.embeddings_io import save_embeddings

    g = np.array([[1, 0], [0, 1], [0.8, 0.6], [-1, 0]], np.float32)
    save_embeddings(tmp_path / "g.npz", g, ["a", "b", "a", "c"], ["g0", "g1", "g2", "g3"])
    save_embeddings(tmp_path / "q.npz", np.array([[0.9, 0.1]], np.float32), ["a"], ["q0"])
    code, out, _ = run_main(["search", str(tmp_path / "g.npz"), str(tmp_path / "q.npz"), "-k", "3", "--json"], capsys)
    assert code == 0
    hits = json.loads(out)[0]["neighbours"]
    # cosine to [0.9, 0.1]: g0 0.994, g2 0.960, g1 0.110, g3 -0.994
    assert [h["path"] for h in hits] == ["g0", "g2", "g1"]
    assert hits[0]["score"] == pytest.approx(0.9 / np.hypot(0.9, 0.1), abs=1e-5)
    code, _, err = run_main(["search", str(tmp_path / "g.npz"), str(tmp_path / "x.png")], capsys)
    assert_one_line_error(code, err, "--model")


def test_report_command_on_fake_run(fake_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(["report", str(fake_run)], capsys)
    assert code == 0 and "report.html" in out
    code, _, err = run_main(["report", str(fake_run / "nope")], capsys)
    assert_one_line_error(code, err, "not found")


def test_index_then_search_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    pytest.importorskip("faiss")
    from deepmetric.embeddings_io import save_embeddings

    g = np.array([[1, 0], [0, 1], [0.8, 0.6], [-1, 0]], np.float32)
    save_embeddings(tmp_path / "g.npz", g, ["a", "b", "a", "c"], ["g0", "g1", "g2", "g3"])
    save_embeddings(tmp_path / "q.npz", np.array([[0.9, 0.1]], np.float32), ["a"], ["q0"])
    index = str(tmp_path / "g.index")
    code, out, _ = run_main(["index", str(tmp_path / "g.npz"), "-o", index, "--kind", "flat"], capsys)
    assert code == 0 and "flat index of 4 items" in out
    code, out, _ = run_main(["search", index, str(tmp_path / "q.npz"), "-k", "2", "--json"], capsys)
    assert code == 0
    assert [h["path"] for h in json.loads(out)[0]["neighbours"]] == ["g0", "g2"]
