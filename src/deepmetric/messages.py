"""One-line messages built from untrusted text: what every layer needs to print a path, a label
or a schema problem safely.

* :func:`safe_text` -- ``str(value)`` with control, format (bidi) and separator characters shown
  as escapes, so a printed name cannot drive the terminal; optionally truncated;
* :func:`schema_problem` -- the first problem of a pydantic ``ValidationError`` as one line.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from pydantic import ValidationError

__all__ = ["safe_text", "schema_problem"]


def safe_text(value: Any, limit: int | None = None) -> str:
    """``str(value)`` with control, format (bidi) and separator characters replaced by visible
    escapes (``\\x1b``, ``\\n``, ``\\u202e``), so a printed path or label cannot drive the
    terminal; ``limit`` truncates (with ``...``)."""
    text = str(value)
    out = []
    for ch in text:
        if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") or ch in "\x7f":
            code = ord(ch)
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(ch) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"))
        else:
            out.append(ch)
    text = "".join(out)
    return text if limit is None or len(text) <= limit else text[: max(0, limit - 3)] + "..."


def schema_problem(exc: ValidationError) -> str:
    """The first problem of a pydantic validation error, one line, safe to print."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "the top level"
    where = safe_text(where, 60)
    if first["type"] == "missing":
        problem = f"missing key '{where}'"
    elif first["type"] == "extra_forbidden":
        problem = f"unknown key '{where}'"
    else:
        message = str(first["msg"]).removeprefix("Value error, ")
        problem = f"bad value at '{where}' ({safe_text(message, 160)})"
    more = exc.error_count() - 1
    return problem + (f" (and {more} more problem{'s' if more > 1 else ''})" if more > 0 else "")
