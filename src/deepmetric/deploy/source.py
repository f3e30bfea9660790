"""Which weights a deployment uses: a run folder and a checkpoint name -> the checkpoint file.

:func:`resolve_checkpoint` accepts a run folder (``which`` names ``checkpoints/<which>.pt``;
``"best"`` means the weights chosen on validation: ``wise.pt`` when the run used WiSE-FT, else
``best.pt``, else ``last.pt``, as ``deepmetric embed`` does) or a checkpoint file inside a run
folder (``which`` is then ignored). A missing folder, a folder without ``config.yaml`` or
without the checkpoint raises a one-line
:class:`~deepmetric.errors.DataError` naming the fix. :func:`checkpoint_ref` records the choice
(with the training step and the file's SHA-256) for :mod:`deepmetric.deploy.manifest`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from deepmetric.deploy.manifest import CheckpointRef
from deepmetric.errors import DataError

__all__ = ["checkpoint_ref", "resolve_checkpoint"]


def resolve_checkpoint(run: str | Path, which: str = "best") -> tuple[Path, str]:
    """``(run folder, checkpoint name)`` of ``run`` (see the module docstring)."""
    from deepmetric.inference import resolve_model_source

    path = Path(run).expanduser()
    run_dir, default = resolve_model_source(path)  # one-line errors for missing folder / config / checkpoints
    if which == "best" and not path.is_file():  # the weights chosen on validation (wise.pt under WiSE-FT)
        return run_dir, default
    if path.is_file() or (run_dir / "checkpoints" / f"{which}.pt").is_file():
        return run_dir, default if path.is_file() else which
    if which == "best":
        return run_dir, default
    have = sorted(p.stem for p in (run_dir / "checkpoints").glob("*.pt"))
    raise DataError(
        f"run folder '{run_dir}' has no checkpoints/{which}.pt (it has: {', '.join(have)}); "
        f"pass which='{default}' (--which {default})"
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_ref(run_dir: Path, which: str, step: int | None) -> CheckpointRef:
    """The :class:`CheckpointRef` of ``run_dir/checkpoints/<which>.pt`` at training ``step``."""
    path = Path(run_dir) / "checkpoints" / f"{which}.pt"
    return CheckpointRef(run=str(Path(run_dir).resolve()), which=which, path=str(path.resolve()),
                         step=step, sha256=_sha256(path))
