"""User-facing errors.

Every problem caused by the user's input (a missing file, a config typo, NaN embeddings, a class
with one sample, ...) raises a subclass of :class:`DeepMetricError` whose message names the
problem *and* the fix. The CLI prints such errors as one line and exits non-zero; any other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class DeepMetricError(Exception):
    """Base class for errors caused by bad input; the message says what is wrong and how to fix it."""


class ConfigError(DeepMetricError, ValueError):
    """An invalid configuration: unknown key, wrong type, out-of-range value."""


class DataError(DeepMetricError, ValueError):
    """Bad data: missing or corrupt file, empty split, too few classes or samples."""


class InputError(DeepMetricError, ValueError):
    """Bad tensors handed to a function: wrong shape, NaN values, mismatched label count."""


def closest_match(name: str, choices: Iterable[str]) -> str | None:
    """Return the valid name closest to ``name`` (for "did you mean" hints), or ``None``."""
    matches = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return matches[0] if matches else None


def unknown_name_message(kind: str, name: str, choices: Iterable[str]) -> str:
    """A one-line message for an unknown ``name`` of some ``kind`` that suggests the closest choice."""
    choices = sorted(choices)
    hint = closest_match(name, choices)
    did_you_mean = f" Did you mean '{hint}'?" if hint else ""
    return f"unknown {kind} '{name}'.{did_you_mean} Valid {plural(kind)}: {', '.join(choices)}."


def plural(noun: str) -> str:
    """English plural of a kind name: loss -> losses, dataset -> datasets, index -> indexes."""
    if noun.endswith(("s", "x", "sh", "ch")):
        return noun + "es"
    return noun + "s"
