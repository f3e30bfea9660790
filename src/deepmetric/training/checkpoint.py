"""Checkpoint files: atomic writes (temporary file + ``os.replace``) and safe loads.

A checkpoint is a dict of tensors and plain Python values only, so it loads with
``torch.load(..., weights_only=True)``, which cannot execute code from the file. A write goes to
a temporary file in the same folder, is flushed to disk, then renamed over the target: a crash
or Ctrl-C during the write leaves the previous file intact.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from deepmetric.atomic_io import atomic_write
from deepmetric.errors import DataError

__all__ = [
    "CHECKPOINT_FORMAT", "atomic_write", "init_weights", "load_checkpoint", "save_checkpoint", "save_npz", "write_json",
]

#: version of the checkpoint dict layout (see docs/run_folder.md)
CHECKPOINT_FORMAT = 1


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` (tensors and plain values) atomically with ``torch.save``. A full disk or a
    read-only folder raises :class:`DataError` (the previous checkpoint is kept)."""
    state = {"format": CHECKPOINT_FORMAT, **state}
    try:
        atomic_write(path, lambda handle: torch.save(state, handle))
    except OSError as exc:
        raise DataError(
            f"cannot write checkpoint '{path}' ({exc.strerror or exc}); free disk space or make the folder "
            "writable, then resume with --resume (the previous checkpoint is kept)"
        ) from None
    except RuntimeError as exc:  # torch.save reports a failed write of its zip container this way
        if "write" not in str(exc).lower():
            raise
        raise DataError(
            f"cannot write checkpoint '{path}' (the write failed: disk full?); free disk space, then resume "
            "with --resume (the previous checkpoint is kept)"
        ) from None


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
    """Write ``obj`` as indented JSON, atomically (mode honouring the umask)."""
    text = json.dumps(obj, indent=2, sort_keys=False, allow_nan=False)
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def save_npz(path: str | Path, **arrays: Any) -> None:
    """Write ``numpy.savez`` arrays atomically (no object arrays: loads with ``allow_pickle=False``)."""
    import numpy as np

    atomic_write(path, lambda handle: np.savez(handle, **arrays))


def _checkpoint_of(source: str | Path) -> Path:
    """A checkpoint file, or a run folder's ``checkpoints/best.pt`` (else ``last.pt``)."""
    path = Path(source).expanduser()
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / "checkpoints" / name).is_file():
                return path / "checkpoints" / name
        raise DataError(f"model.init_from: run folder '{path}' holds no checkpoints/best.pt or last.pt; train it first")
    if not path.is_file():
        raise DataError(f"model.init_from: '{path}' is neither a run folder nor a checkpoint file; check the path")
    return path


def init_weights(
    model: torch.nn.Module, loss: torch.nn.Module, source: str | Path, class_names: list[str] | None = None
) -> dict[str, Any]:
    """Initialise ``model`` (strictly) and ``loss`` (its classifier, centers, proxies) from the
    checkpoint at ``source`` (``model.init_from``). The loss is loaded only when every tensor's shape
    matches AND, when both sides know them, the training classes are the same names in the same
    order (a classifier over other classes would silently predict the wrong ones). Returns
    ``{"checkpoint": path, "loss_loaded": bool}``."""
    path = _checkpoint_of(source)
    state = load_checkpoint(path)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0][:200]
        raise DataError(
            f"model.init_from: the weights in '{path}' do not fit this model ({first}); use a run of the same "
            "model architecture"
        ) from None
    own = loss.state_dict()
    saved = state.get("loss", {})
    fits = set(own) == set(saved) and all(own[k].shape == saved[k].shape for k in own)
    saved_names = list(state.get("class_names") or [])
    if fits and class_names and saved_names and saved_names != list(class_names):
        fits = False
    if fits:
        loss.load_state_dict(saved)
    return {"checkpoint": str(path), "loss_loaded": fits}
