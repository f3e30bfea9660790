"""Atomic file writes: a crash, a full disk or Ctrl-C never leaves a half-written file.

:func:`atomic_write` calls ``write(handle)`` on a temporary file in the target's folder, flushes
and fsyncs it, gives it the mode an ordinary new file would get (``0o666 & ~umask``; ``mkstemp``
makes 0600), then renames it over the target with ``os.replace`` (atomic on POSIX and Windows
within one filesystem). On any error the temporary file is removed, the target keeps its previous
content, and the error propagates. Every run-folder file, checkpoint, config and cache index is
written through it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_write"]


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """Write ``path`` atomically through ``write(handle)`` (a binary handle); returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    """The process umask (read without changing it where /proc allows)."""
    try:
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
