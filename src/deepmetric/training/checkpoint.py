"""Checkpoint files: atomic writes (temporary file + ``os.replace``) and safe loads.

A checkpoint is a dict of tensors and plain Python values only, so it loads with
``torch.load(..., weights_only=True)``, which cannot execute code from the file. A write goes to
a temporary file in the same folder, is flushed to disk, then renamed over the target: a crash
or Ctrl-C during the write leaves the previous file intact.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch

from deepmetric.errors import DataError

__all__ = ["CHECKPOINT_FORMAT", "atomic_write", "load_checkpoint", "save_checkpoint", "write_json"]

#: version of the checkpoint dict layout (see docs/run_folder.md)
CHECKPOINT_FORMAT = 1


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(handle)`` on a temporary file next to ``path``, fsync it, then rename it to
    ``path``. On any error (or KeyboardInterrupt) the temporary file is removed and ``path`` keeps
    its previous content."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` (tensors and plain values) atomically with ``torch.save``."""
    state = {"format": CHECKPOINT_FORMAT, **state}
    atomic_write(path, lambda handle: torch.save(state, handle))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``. Raises :class:`DataError` for a missing,
    truncated or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"checkpoint '{path}' does not exist; check the run folder or train first")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means an unusable file
        raise DataError(
            f"checkpoint '{path}' cannot be loaded safely ({exc.__class__.__name__}: {str(exc)[:200]}); "
            "the file is damaged or was not written by deepmetric -- use another checkpoint"
        ) from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise DataError(
            f"checkpoint '{path}' is not a deepmetric checkpoint of format {CHECKPOINT_FORMAT}; "
            "use a checkpoint written by deepmetric.training.fit"
        )
    return state


def write_json(obj: Any, path: str | Path) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    text = json.dumps(obj, indent=2, sort_keys=False, allow_nan=False)
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))
