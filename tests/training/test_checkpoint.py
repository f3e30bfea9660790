"""Atomic checkpoint writes and weights_only loads."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from deepmetric.errors import DataError
from deepmetric.training.checkpoint import atomic_write, load_checkpoint, save_checkpoint
from deepmetric.training.seed import get_rng_state, set_rng_state


def test_round_trip_with_rng_state_loads_weights_only(tmp_path: Path) -> None:
    path = tmp_path / "ck" / "last.pt"
    state = {"step": 7, "model": {"w": torch.arange(6.0).reshape(2, 3)}, "rng": get_rng_state(), "name": "x"}
    save_checkpoint(state, path)
    # an independent weights_only load accepts the file (plain types and tensors only)
    raw = torch.load(path, weights_only=True)
    assert raw["step"] == 7 and torch.equal(raw["model"]["w"], state["model"]["w"])
    loaded = load_checkpoint(path)
    expected = torch.rand(5)  # draws after the captured state
    set_rng_state(loaded["rng"])
    assert torch.equal(torch.rand(5), expected)
    import numpy as np
    import random

    set_rng_state(loaded["rng"])
    a = (np.random.rand(), random.random())
    set_rng_state(loaded["rng"])
    assert (np.random.rand(), random.random()) == a


def test_crash_mid_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint({"step": 1}, path)
    before = path.read_bytes()

    def crashing_save(obj: object, handle) -> None:  # type: ignore[no-untyped-def]
        handle.write(b"half a checkpoint")
        raise KeyboardInterrupt  # Ctrl-C in the middle of the write

    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"step": 2}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1


def test_atomic_write_replaces_content(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    atomic_write(path, lambda h: h.write(b"one"))
    atomic_write(path, lambda h: h.write(b"two"))
    assert path.read_bytes() == b"two"


class _Evil:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (print, ("code ran",))


def test_unsafe_truncated_missing_and_foreign_files_are_data_errors(tmp_path: Path) -> None:
    evil = tmp_path / "evil.pt"
    torch.save({"format": 1, "x": _Evil()}, evil)
    with pytest.raises(DataError, match="cannot be loaded safely"):
        load_checkpoint(evil)
    good = tmp_path / "good.pt"
    save_checkpoint({"step": 3}, good)
    truncated = tmp_path / "trunc.pt"
    truncated.write_bytes(good.read_bytes()[:40])
    with pytest.raises(DataError, match="damaged"):
        load_checkpoint(truncated)
    with pytest.raises(DataError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(DataError, match="not a deepmetric checkpoint"):
        load_checkpoint(foreign)
    assert pickle  # imported for clarity of what the evil object abuses
