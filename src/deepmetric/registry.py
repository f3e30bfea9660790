"""One registry mechanism for every layer: a name, or an import path, to the object it builds.

Each layer owns its registry (``deepmetric.data.registry.DATASETS``,
``deepmetric.models.registry.MODELS``, ``deepmetric.losses.LOSSES``,
``deepmetric.training.eval_protocols.EVAL_PROTOCOLS``, ``deepmetric.training.protocols.PROTOCOLS``)
and they all work the same way:

* an entry maps a short name to ``"package.module:attribute"`` (imported lazily, on first use)
  or to the object itself;
* :meth:`Registry.resolve` accepts a registered name **or** an import path ``package.module:Name``
  written by the user (a config key such as ``model.name: mypkg.nets:TinyNet``), so your own
  parts need no registration;
* an unknown name is a :class:`~deepmetric.errors.ConfigError` naming the closest registered
  one; an import path that cannot be imported is one naming the module or attribute missing.

A registry never imports a higher layer: entries point into the registry's own layer (or below).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from typing import Any

from deepmetric.errors import ConfigError, unknown_name_message

__all__ = ["Registry", "import_path"]


def import_path(path: str, kind: str = "object") -> Any:
    """Import ``"package.module:attribute"`` (the attribute may be dotted: ``module:Class.method``).

    Raises :class:`ConfigError` with one line naming what is missing and how to fix it.
    """
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"{kind} '{path}' is not an import path; write it as package.module:Name")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or module_name
        raise ConfigError(
            f"{kind} '{path}': module '{missing}' cannot be imported; install it or add its folder to PYTHONPATH"
        ) from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{kind} '{path}': module '{module_name}' has no attribute '{attr}'; check the name")
        obj = getattr(obj, part)
    return obj


class Registry(MutableMapping[str, Any]):
    """Names of one kind of component (``kind``: "dataset", "model", "loss", ...) to their builders.

    A mapping of the registered entries (``name in registry``, iteration, ``registry[name] =
    entry``) plus :meth:`resolve` (a name or an import path to its object) and :meth:`register`.
    """

    def __init__(self, kind: str, entries: Mapping[str, str | Callable[..., Any]] | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, str | Callable[..., Any]] = dict(entries or {})

    def __getitem__(self, name: str) -> str | Callable[..., Any]:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __setitem__(self, name: str, entry: str | Callable[..., Any]) -> None:
        self.register(name, entry)

    def __delitem__(self, name: str) -> None:
        del self._entries[name]

    def register(self, name: str, entry: str | Callable[..., Any]) -> None:
        """Add (or replace) ``name`` -> ``"module:attribute"`` or an object."""
        if not name or ":" in name:
            raise ConfigError(f"{self.kind} name '{name}' must be non-empty and contain no ':'")
        self._entries[name] = entry

    def resolve(self, name: str) -> Any:
        """The object registered as ``name``, or imported from the path ``package.module:Name``."""
        if name in self._entries:
            entry = self._entries[name]
            return import_path(entry, f"{self.kind} '{name}'") if isinstance(entry, str) else entry
        if ":" in name:
            return import_path(name, self.kind)
        raise ConfigError(
            unknown_name_message(self.kind, name, self._entries)
            + " Or give an import path package.module:Name."
        )

    def is_registered(self, name: str) -> bool:
        """Whether ``name`` is a registered short name (import paths are not)."""
        return name in self._entries
