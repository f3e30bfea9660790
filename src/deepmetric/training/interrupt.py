"""Stopping a run cleanly: the first Ctrl-C (SIGINT) or SIGTERM -- what cluster schedulers send
before preemption -- only sets a flag that the trainer checks between steps, so the step finishes
and ``checkpoints/last.pt`` is written; :class:`RunInterrupted` then reports the saved step. A
second signal interrupts at once.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

__all__ = ["Interrupt", "RunInterrupted"]


class RunInterrupted(KeyboardInterrupt):
    """Training stopped by a signal after saving ``checkpoints/last.pt``; ``signum`` is SIGINT
    (Ctrl-C) or SIGTERM (what cluster schedulers send before preemption), ``step`` the saved step."""

    def __init__(self, signum: int, step: int | None = None, run_dir: Path | None = None) -> None:
        super().__init__(signum)
        self.signum, self.step, self.run_dir = signum, step, run_dir


class Interrupt:
    """While active, the first SIGINT (Ctrl-C) or SIGTERM only sets a flag, checked between steps
    (the step finishes and ``last.pt`` is written); a second one interrupts immediately.
    Inactive outside the main thread."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Interrupt:
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested is not None:
            raise RunInterrupted(signum)
        self.requested = signum

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
