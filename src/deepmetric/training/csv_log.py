"""``log.csv``: one row per ``trainer.log_every`` steps (step, epoch, loss, lr, seconds, extras)."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

__all__ = ["LOG_COLUMNS", "CsvLog"]

#: fixed columns of log.csv, in order; extra columns follow
LOG_COLUMNS = ("step", "epoch", "loss", "lr", "seconds")


class CsvLog:
    """Append-only CSV log. On resume, rows after the resumed step are dropped first (they belong
    to steps that will be re-run)."""

    def __init__(self, path: str | Path, extras: Sequence[str] = (), resume_step: int | None = None) -> None:
        self.path = Path(path)
        self.columns = [*LOG_COLUMNS, *extras]
        rows: list[list[str]] = []
        if resume_step is not None and self.path.is_file():
            with self.path.open(newline="", encoding="utf-8") as handle:
                reader = csv.reader(handle)
                header = next(reader, None)
                if header == self.columns:
                    rows = [r for r in reader if r and int(r[0]) <= resume_step]
        with self.path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(self.columns)
            writer.writerows(rows)

    def write(self, **values: float | int | None) -> None:
        """Append a row; missing columns stay empty."""
        unknown = set(values) - set(self.columns)
        if unknown:
            raise KeyError(f"log.csv has no column(s) {sorted(unknown)}; columns: {self.columns}")
        with self.path.open("a", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerow(["" if values.get(c) is None else values[c] for c in self.columns])
