"""An exclusive lock on a run folder: one writer at a time, stale locks taken over.

``with RunLock(run_dir): ...`` holds an ``fcntl.flock`` on ``run_dir/.lock`` (which records the
holder's PID, host and start time). A second process asking for the same folder fails AT ONCE
with a :class:`~deepmetric.errors.DataError` naming the holder. The kernel drops the lock when the
holder dies (even by SIGKILL), so a lock file left behind by a dead process is simply taken over,
and the takeover is reported. On platforms without ``fcntl`` (Windows) the lock falls back to the
recorded PID: a live PID on this host blocks, anything else is taken over. Network file systems
that do not support ``flock`` are not protected across machines.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from deepmetric.errors import DataError

__all__ = ["LOCK_NAME", "RunLock"]

LOCK_NAME = ".lock"

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_holder(path: Path) -> dict[str, Any]:
    try:
        holder = json.loads(path.read_text(encoding="utf-8")[:4096])
        return holder if isinstance(holder, dict) else {}
    except (OSError, ValueError):
        return {}


class RunLock:
    """Exclusive lock on ``run_dir`` for the duration of a ``with`` block (see the module docstring)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._handle: IO[str] | None = None
        self.took_over: dict[str, Any] | None = None

    def _busy(self, holder: dict[str, Any]) -> DataError:
        who = f"PID {holder.get('pid', '?')} on host {holder.get('host', '?')}"
        since = holder.get("started")
        when = f" since {since}" if since else ""
        return DataError(
            f"run folder '{self.run_dir}' is in use by {who}{when}; wait for that run to finish, stop it, "
            "or choose another --out"
        )

    def acquire(self) -> RunLock:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        previous = _read_holder(self.path)
        handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held until release()
        if fcntl is not None:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                raise self._busy(_read_holder(self.path)) from None
        elif previous.get("host") == socket.gethostname() and _pid_alive(int(previous.get("pid", -1))):
            handle.close()
            raise self._busy(previous)
        if previous and previous.get("pid") != os.getpid():
            self.took_over = previous
            print(f"note: took over the stale lock of '{self.run_dir}' (PID {previous.get('pid')} on "
                  f"{previous.get('host')} is gone)", file=sys.stderr)
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "started": time.strftime("%Y-%m-%d %H:%M:%S")}))
        handle.flush()
        self._handle = handle
        return self

    def release(self) -> None:
        if self._handle is None:
            return
        try:
            self._handle.seek(0)
            self._handle.truncate()  # an empty lock file: nothing stale to report next time
        except OSError:
            pass
        self._handle.close()  # closing releases the flock
        self._handle = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
