"""Keep docs/config.md's key tables equal to the schema: ``python -m deepmetric.config_docs docs/config.md``.

Each ``## <section>`` of the page keeps its hand-written prose; the table under it (``| key |
default | meaning |``) is regenerated from :func:`deepmetric.config.describe_config`. A section
of the schema missing from the page is appended with its class docstring as prose. A test
checks that the page is up to date.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from deepmetric.config import Config, describe_config

__all__ = ["update_config_docs"]

_HEADER = "| key | default | meaning |\n|---|---|---|\n"


def _table(section: str) -> str:
    rows = [r for r in describe_config() if (r[0].split(".")[0] == section if section else "." not in r[0])]
    body = "".join(f"| `{key}` | `{default}` | {desc.replace('|', '/')} |\n" for key, default, desc in rows)
    return _HEADER + body


def update_config_docs(text: str) -> str:
    """``text`` with every section's table regenerated (and missing sections appended)."""
    sections = {"Top level": ""}
    for name, field in Config.model_fields.items():
        if hasattr(field.annotation, "model_fields"):
            sections[name] = name
    for title, section in sections.items():
        pattern = re.compile(rf"(^## {re.escape(title)}\n(?:(?!^## ).*\n)*?)\| key \| default \| meaning \|\n\|---\|---\|---\|\n(?:\|.*\|\n)*", re.M)
        if pattern.search(text):
            text = pattern.sub(lambda m: m.group(1) + _table(section), text, count=1)
        else:
            doc = " ".join((Config.model_fields[section].annotation.__doc__ or "").split())
            text = text.rstrip("\n") + f"\n\n## {title}\n\n{doc}\n\n{_table(section)}"
    return text


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0] if args else "docs/config.md")
    path.write_text(update_config_docs(path.read_text(encoding="utf-8")), encoding="utf-8")
    print(f"updated {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
