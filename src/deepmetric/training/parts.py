"""Your own model and loss objects in :func:`deepmetric.training.fit`, and how the run folder
remembers them so a NEW process can rebuild the run.

``fit(config, run_dir, model=my_net, loss=my_loss)`` trains the given objects instead of building
``model.name`` / ``loss.name``. A run folder must be usable without the training process
(``deepmetric eval | embed | search | export``, :func:`deepmetric.load`), so
:func:`config_with_parts` writes into the run's config what was used:

* ``model.name`` / ``loss.name`` become the object's class as an import path
  ``package.module:Class`` and ``model.params`` / ``loss.params`` its constructor arguments, read
  the way scikit-learn's ``get_params`` does: for every parameter of ``Class.__init__`` the
  attribute of the same name (or ``_name``), kept when it is a plain value (bool, int, float, str,
  None, lists and string-keyed dicts of those). Parameters that cannot be recorded that way are
  listed in ``parts.json`` and named in a warning at training time;
* ``parts.json`` (:class:`PartsFile`) says which parts were objects, their class, recorded and
  unrecorded arguments, and whether the class is importable from a new process (a class defined
  in a script's ``__main__`` or inside a function is not).

Loading (:func:`rebuild_hint`): when a new process cannot rebuild a part (the module is not
importable, a constructor argument was not recorded, or the weights do not fit the rebuilt
object), the error says exactly what to import or pass, e.g.
``deepmetric.load(RUN, model=TinyNet(...))``.

A loss object replaces the BASE loss only: ``loss.ce_weight``, ``loss.memory_size`` and
``loss.synthesis`` still wrap it as for a named loss. A model with named outputs (multilevel,
tracklet) needs one loss per output: pass a
:class:`~deepmetric.losses.multi_output.MultiOutputLoss`, or name the loss in the config.
"""

from __future__ import annotations

import importlib
import inspect
import json
import math
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from deepmetric.config import Config, load_config

__all__ = ["PART_FILE", "PartRecord", "PartsFile", "config_with_parts", "describe_part", "read_parts",
           "rebuild_hint", "write_parts"]

#: the record of the objects a run trained, in the run folder
PART_FILE = "parts.json"

_PLAIN = (bool, int, float, str, type(None))
_MISSING = object()


class PartRecord(BaseModel):
    """One object passed to ``fit``: its class, the constructor arguments recorded and not."""

    model_config = ConfigDict(extra="forbid")

    cls: str
    importable: bool
    params: dict[str, Any]
    not_recorded: list[str]


class PartsFile(BaseModel):
    """``parts.json``: the model and loss objects of a run (None = built from the config)."""

    model_config = ConfigDict(extra="forbid")

    model: PartRecord | None = None
    loss: PartRecord | None = None


def _plain(value: Any) -> bool:
    if isinstance(value, _PLAIN):
        return not (isinstance(value, float) and math.isnan(value))  # NaN does not round-trip
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


def _as_yaml(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_as_yaml(v) for v in value]
    if isinstance(value, dict):
        return {k: _as_yaml(v) for k, v in value.items()}
    return value


def class_path(obj: object) -> str:
    """``package.module:QualifiedName`` of ``obj``'s class."""
    cls = type(obj)
    return f"{cls.__module__}:{cls.__qualname__}"


def _importable(path: str) -> bool:
    module_name, _, qualname = path.partition(":")
    if module_name == "__main__" or "<locals>" in qualname:
        return False
    try:
        found: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError):
        return False
    return isinstance(found, type)


def describe_part(obj: object) -> PartRecord:
    """The :class:`PartRecord` of ``obj`` (see the module docstring for what is recorded)."""
    params: dict[str, Any] = {}
    missing: list[str] = []
    try:
        signature = inspect.signature(type(obj).__init__)
    except (TypeError, ValueError):
        signature = None
    if signature is not None:
        for name, p in list(signature.parameters.items())[1:]:  # skip self
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            for attr in (name, f"_{name}"):
                value = getattr(obj, attr, _MISSING)
                if value is not _MISSING and _plain(value):
                    params[name] = _as_yaml(value)
                    break
            else:
                missing.append(name)
    path = class_path(obj)
    return PartRecord(cls=path, importable=_importable(path), params=params, not_recorded=missing)


def config_with_parts(config: Config, model: object | None, loss: object | None) -> tuple[Config, PartsFile]:
    """``config`` with ``model.name``/``params`` and ``loss.name``/``params`` describing the given
    objects (unchanged for a part that is None), and the :class:`PartsFile` to write."""
    parts = PartsFile(model=describe_part(model) if model is not None else None,
                      loss=describe_part(loss) if loss is not None else None)
    if parts.model is None and parts.loss is None:
        return config, parts
    data = config.to_dict()
    if parts.model is not None:
        data["model"].update(_model_section(model, parts.model))
    if parts.loss is not None:
        data["loss"]["name"], data["loss"]["params"] = parts.loss.cls, dict(parts.loss.params)
    return load_config(data), parts


def _model_section(model: object, record: PartRecord) -> dict[str, Any]:
    """``model.*`` keys for an object: its class and arguments; an argument that is also a standard
    model key (``embedding_dim``, ``dropout``, ...) goes to that key, since the builder passes those
    itself; standard keys the class does not take return to their defaults (they did not apply)."""
    from deepmetric.config import ModelConfig

    defaults = ModelConfig()
    standard = {"backbone", "pretrained", "embedding_dim", "pooling", "normalize", "in_chans", "dropout", "freeze_bn"}
    params = dict(record.params)
    section: dict[str, Any] = {"name": record.cls}
    for key in standard:
        section[key] = params.pop(key) if key in params else getattr(defaults, key)
    params.pop("image_size", None)  # given by data.image_size
    section["params"] = params
    return section


def write_parts(parts: PartsFile, run_dir: Path) -> None:
    """Write ``parts.json`` when a part was an object (nothing otherwise)."""
    from deepmetric.run_files import write_run_file

    if parts.model is not None or parts.loss is not None:
        write_run_file(parts, Path(run_dir) / PART_FILE)


def read_parts(run_dir: Path) -> PartsFile | None:
    """The run's ``parts.json``, or None when the run built every part from its config."""
    path = Path(run_dir) / PART_FILE
    if not path.is_file():
        return None
    return PartsFile.model_validate(json.loads(path.read_text(encoding="utf-8")[:1_000_000]))


def unrecorded_warning(section: str, record: PartRecord) -> str | None:
    """The training-time warning for arguments a new process cannot restore (None if all were)."""
    if record.importable and not record.not_recorded:
        return None
    name = record.cls.partition(":")[2]
    why = []
    if not record.importable:
        why.append(f"its class {record.cls} cannot be imported from another process (define it in a module)")
    if record.not_recorded:
        why.append(f"constructor argument(s) {', '.join(record.not_recorded)} are not plain attributes of the object, "
                   "so they were not recorded")
    return (f"{section} object {name}: {'; '.join(why)}; to use this run from a new process, pass the object: "
            f"deepmetric.load(RUN, {section}={name}(...))")


def rebuild_hint(run_dir: Path, section: str, problem: str) -> str | None:
    """One line for a failed rebuild of an object part, or None when ``section`` was built from
    the config (the caller's own error then stands)."""
    parts = read_parts(run_dir)
    record = getattr(parts, section, None) if parts is not None else None
    if record is None:
        return None
    name = record.cls.partition(":")[2]
    what = "import its module (pip install it or add its folder to PYTHONPATH)" if not record.importable else \
        "check the module has not changed"
    unrecorded = (f"; its argument(s) {', '.join(record.not_recorded)} were not recorded"
                  if record.not_recorded else "")
    return (f"run '{run_dir}' was trained with a {section} object of class {record.cls} (fit({section}=...)), which "
            f"cannot be rebuilt here ({problem}){unrecorded}: {what}, or in Python pass it: "
            f"deepmetric.load('{run_dir}', {section}={name}(...))")
