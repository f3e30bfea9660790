"""Nested class trees and CSV manifests wherever a data path is accepted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepmetric.data.folder import folder_dataset
from deepmetric.inference import collect_images, data_source


def png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path)


@pytest.fixture
def alphabet_tree(tmp_path: Path) -> Path:
    """Omniglot-like: root/<alphabet>/<character>/<drawing>.png (2 alphabets x 2 characters x 2)."""
    root = tmp_path / "tree"
    for a in ("Greek", "Latin"):
        for c in ("char01", "char02"):
            for d in range(2):
                png(root / a / c / f"{d}.png", 10 * d)
    return root


def test_nested_tree_warns_and_class_depth_2_uses_the_sub_folders(alphabet_tree: Path, capsys) -> None:
    top = folder_dataset(alphabet_tree, split="all")
    err = capsys.readouterr().err
    assert top.class_names == ["Greek", "Latin"]  # what the user asked for, but warned about
    assert "class_depth=2" in err and "--class-depth 2" in err and len(err.strip().splitlines()) == 1
    deep = folder_dataset(alphabet_tree, split="all", class_depth=2)
    assert deep.class_names == ["Greek/char01", "Greek/char02", "Latin/char01", "Latin/char02"]
    assert np.bincount(deep.labels).tolist() == [2, 2, 2, 2]
    assert capsys.readouterr().err == ""  # no warning when the depth is right


def test_flat_class_folders_do_not_warn(tmp_path: Path, capsys) -> None:
    for c in ("cat", "dog"):
        for d in range(2):
            png(tmp_path / "flat" / c / f"{d}.png", d)
    assert folder_dataset(tmp_path / "flat", split="all").class_names == ["cat", "dog"]
    assert capsys.readouterr().err == ""


def test_csv_manifest_is_a_data_source_for_eval_and_embed(tmp_path: Path) -> None:
    for i in range(4):
        png(tmp_path / "img" / f"{i}.png", 40 * i)
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\nimg/0.png,a\nimg/1.png,a\nimg/2.png,b\nimg/3.png,b\n")
    data = data_source(manifest)
    assert [Path(p).name for p in data.paths] == ["0.png", "1.png", "2.png", "3.png"]
    assert [data.class_names[y] for y in data.labels] == ["a", "a", "b", "b"]
    paths, labels = collect_images([str(manifest)])
    assert [p.name for p in paths] == ["0.png", "1.png", "2.png", "3.png"] and labels == ["a", "a", "b", "b"]
    with pytest.raises(Exception, match="does not exist"):
        data_source(tmp_path / "missing.csv")
