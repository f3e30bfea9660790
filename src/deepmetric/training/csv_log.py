"""``log.csv``: one row per ``trainer.log_every`` steps (step, epoch, loss, lr, seconds, extras)."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path

from deepmetric.training.checkpoint import atomic_write

__all__ = ["LOG_COLUMNS", "CsvLog"]

#: fixed columns of log.csv, in order; extra columns follow
LOG_COLUMNS = ("step", "epoch", "loss", "lr", "seconds")


def _step_of(row: list[str]) -> int | None:
    try:
        return int(float(row[0]))
    except (ValueError, IndexError):
        return None


class CsvLog:
    """Append-only CSV log. On resume, rows after the resumed step are dropped first (they belong
    to steps that will be re-run), and so are rows that do not parse (a line cut by a kill); the
    kept rows are rewritten atomically. Each row is one ``write`` of a whole line, flushed."""

    def __init__(self, path: str | Path, extras: Sequence[str] = (), resume_step: int | None = None) -> None:
        self.path = Path(path)
        self.columns = [*LOG_COLUMNS, *extras]
        rows: list[list[str]] = []
        if resume_step is not None and self.path.is_file():
            with self.path.open(newline="", encoding="utf-8") as handle:
                reader = csv.reader(handle)
                header = next(reader, None)
                if header == self.columns:
                    for r in reader:
                        step = _step_of(r)
                        if step is not None and step <= resume_step and len(r) == len(self.columns):
                            rows.append(r)
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(self.columns)
        writer.writerows(rows)
        text = buffer.getvalue().encode("utf-8")
        if str(self.path) == os.devnull:
            return
        atomic_write(self.path, lambda handle: handle.write(text))

    def write(self, **values: float | int | None) -> None:
        """Append a row; missing columns stay empty."""
        unknown = set(values) - set(self.columns)
        if unknown:
            raise KeyError(f"log.csv has no column(s) {sorted(unknown)}; columns: {self.columns}")
        line = io.StringIO()
        csv.writer(line).writerow(["" if values.get(c) is None else values[c] for c in self.columns])
        with self.path.open("a", newline="", encoding="utf-8") as handle:
            handle.write(line.getvalue())
            handle.flush()
