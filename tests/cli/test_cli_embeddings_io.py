"""Embeddings files: round trip and validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deepmetric.embeddings_io import load_embeddings, save_embeddings
from deepmetric.errors import DataError


def test_round_trip_keeps_values_labels_and_paths(tmp_path: Path) -> None:
    emb = np.arange(12, dtype=np.float64).reshape(4, 3)
    out = save_embeddings(tmp_path / "e", emb, ["x", "y", "x", "z"], ["p0", "p1", "p2", "p3"])
    assert out.name == "e.npz"
    data = load_embeddings(out)
    assert data.embeddings.dtype == np.float32 and np.array_equal(data.embeddings, emb.astype(np.float32))
    assert data.labels.tolist() == ["x", "y", "x", "z"]
    assert data.paths == ["p0", "p1", "p2", "p3"]
    assert len(data) == 4 and data.dim == 3


def test_integer_labels_and_no_paths(tmp_path: Path) -> None:
    np.savez(tmp_path / "t.npz", embeddings=np.ones((3, 2)), labels=np.array([1.0, 2.0, 1.0]))
    data = load_embeddings(tmp_path / "t.npz")
    assert data.labels.dtype.kind == "i" and data.labels.tolist() == [1, 2, 1]
    assert data.paths == ["", "", ""]


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"embeddings": np.ones((3, 2)), "labels": np.arange(2)}, "3 embeddings but 2 labels"),
        ({"embeddings": np.ones((3, 2)), "labels": np.arange(3), "paths": np.array(["a"])}, "3 embeddings but 1 paths"),
        ({"embeddings": np.ones(3), "labels": np.arange(3)}, "2-D"),
        ({"embeddings": np.array([[1.0, np.nan]]), "labels": np.arange(1)}, "NaN"),
        ({"embeddings": np.ones((2, 2)), "labels": np.array([0.5, 1.0])}, "integers or strings"),
        ({"labels": np.arange(3)}, "lacks 'embeddings'"),
    ],
)
def test_invalid_files_raise_data_error(tmp_path: Path, arrays: dict, message: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=message):
        load_embeddings(path)


def test_missing_and_non_npz_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found.*deepmetric embed"):
        load_embeddings(tmp_path / "none.npz")
    (tmp_path / "x.npz").write_text("not a zip")
    with pytest.raises(DataError, match="not a readable .npz"):
        load_embeddings(tmp_path / "x.npz")


def test_save_refuses_mismatch(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="2 embeddings but 3 labels"):
        save_embeddings(tmp_path / "e.npz", np.ones((2, 2)), [0, 1, 2])
    assert not (tmp_path / "e.npz").exists()
