"""Brazilian Coffee Scenes loader on a tiny fake tree with the released layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepmetric.data.brazilian_coffee import (
    CLASS_NAMES,
    BrazilianCoffeeScenes,
    brazilian_coffee_dataset,
    brazilian_coffee_scenes,
    cross_validation_split,
    parse_fold_list,
)
from deepmetric.errors import DataError


def _fake_tree(root: Path, list_inside: bool = False) -> dict[int, list[tuple[str, str]]]:
    """fold1..fold5, each with 2 coffee + 1 noncoffee 8x8 JPEGs and its list file."""
    base = root / "brazilian_coffee_scenes"
    entries: dict[int, list[tuple[str, str]]] = {}
    rng = np.random.default_rng(0)
    for fold in range(1, 6):
        folder = base / f"fold{fold}"
        folder.mkdir(parents=True)
        rows = [("coffee", f"{fold}.1.10.20"), ("noncoffee", f"{fold}.2.30.40"), ("coffee", f"{fold}.3.50.60")]
        for _, name in rows:
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(folder / f"{name}.jpg")
        lst = (folder if list_inside else base) / f"fold{fold}.txt"
        lst.write_text("".join(f"{c}.{n}\n" for c, n in rows) + "\n")
        entries[fold] = rows
    return entries


def test_parse_fold_list(tmp_path: Path) -> None:
    p = tmp_path / "fold1.txt"
    p.write_text("coffee.1.15.203.11.56\n\nnoncoffee.2.7.1.0.3\nnon-coffee.x\n")
    assert parse_fold_list(p) == [
        ("coffee", "1.15.203.11.56"),
        ("noncoffee", "2.7.1.0.3"),
        ("noncoffee", "x"),
    ]
    p.write_text("coffee.a\ntea.b\n")
    with pytest.raises(DataError, match=r"fold1.txt:2"):
        parse_fold_list(p)
    with pytest.raises(DataError, match="does not exist"):
        parse_fold_list(tmp_path / "nope.txt")


@pytest.mark.parametrize("list_inside", [False, True])
def test_loads_released_layout(tmp_path: Path, list_inside: bool) -> None:
    entries = _fake_tree(tmp_path, list_inside)
    items = brazilian_coffee_scenes(tmp_path)  # the parent of brazilian_coffee_scenes works too
    assert len(items) == 15
    for item in items:
        assert item.path.is_file()
        assert item.path.parent.name == f"fold{item.fold}"
        assert CLASS_NAMES[item.label] == item.class_name
        assert (item.class_name, item.path.name[: -len(".jpg")]) in entries[item.fold]
    assert [i.class_name for i in items[:3]] == ["coffee", "noncoffee", "coffee"]
    train, test = cross_validation_split(tmp_path / "brazilian_coffee_scenes", test_fold=3)
    assert {i.fold for i in train} == {1, 2, 4, 5} and {i.fold for i in test} == {3}
    assert len(train) == 12 and len(test) == 3


def test_dataset_items(tmp_path: Path) -> None:
    _fake_tree(tmp_path)
    ds = BrazilianCoffeeScenes(tmp_path, folds=[2], transform=lambda im: np.asarray(im))
    assert len(ds) == 3 and ds.labels == [1, 0, 1]
    image, label = ds[1]
    assert image.shape == (8, 8, 3) and label == 0
    train = brazilian_coffee_dataset(tmp_path, split="train", test_fold=5)
    test = brazilian_coffee_dataset(tmp_path, split="test", test_fold=5)
    assert len(train) == 12 and len(test) == 3
    assert all("fold5" in p for p in test.paths) and not any("fold5" in p for p in train.paths)
    with pytest.raises(DataError, match="split"):
        brazilian_coffee_dataset(tmp_path, split="val")


def test_missing_pieces_are_data_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no Brazilian Coffee Scenes folds"):
        brazilian_coffee_scenes(tmp_path)
    _fake_tree(tmp_path)
    base = tmp_path / "brazilian_coffee_scenes"
    (base / "fold4" / "4.2.30.40.jpg").unlink()
    with pytest.raises(DataError, match="noncoffee.4.2.30.40"):
        brazilian_coffee_scenes(base, folds=[4])
    with pytest.raises(DataError, match="1..5"):
        brazilian_coffee_scenes(base, folds=[6])
