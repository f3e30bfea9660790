"""The three export formats: how each writes a graph to a file and runs the file back.

* ``onnx`` (``.onnx``): written by ``torch.onnx.export`` (the TorchScript-based exporter, opset
  17, which needs no ``onnxscript``), run by ONNX Runtime (both from the extra ``deepmetric[export]``);
* ``export`` (``.pt2``): ``torch.export.export`` + ``torch.export.save``, run by
  ``torch.export.load(path).module()``;
* ``torchscript`` (``.ts``): ``torch.jit.trace`` + ``torch.jit.save``, run by ``torch.jit.load``.

:func:`resolve_format` picks the format from the file suffix unless one is given (aliases: ``pt2``
for ``export``, ``ts`` for ``torchscript``). Every writer exports a dynamic batch axis unless
``static_batch`` fixes it (and always a dynamic frame axis, ``"frames"``, on the inputs a graph
names in ``frame_axes``: audio features, clips and their mask); each returns nothing and
raises on failure, and :func:`runner` gives ``run(inputs) -> numpy embeddings`` for a written file.
Whether the file really accepts other batch sizes is checked by :mod:`deepmetric.deploy.export`.
"""

from __future__ import annotations

import contextlib
import inspect
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from deepmetric.errors import InputError

__all__ = ["FORMATS", "ONNX_OPSET", "SUFFIXES", "example_batch", "require_onnx", "resolve_format", "runner", "write"]

#: format -> its file suffix
SUFFIXES = {"onnx": ".onnx", "export": ".pt2", "torchscript": ".ts"}
FORMATS = tuple(SUFFIXES)
_ALIASES = {"pt2": "export", "ts": "torchscript", "torch.export": "export", "jit": "torchscript"}
#: ONNX opset written by default (ONNX Runtime >= 1.14 runs it)
ONNX_OPSET = 17
EXPORT_EXTRA = 'pip install "deepmetric[export]"'


def resolve_format(path: str | Path, format: str | None = None) -> str:
    """The export format of ``path`` (its suffix) or ``format`` (a name or alias)."""
    if format is not None:
        name = _ALIASES.get(format.lower(), format.lower())
        if name not in SUFFIXES:
            raise InputError(f"unknown export format '{format}'; use one of {', '.join(FORMATS)} (or pt2, ts)")
        return name
    suffix = Path(path).suffix.lower()
    for name, known in SUFFIXES.items():
        if suffix == known:
            return name
    raise InputError(
        f"cannot tell the export format of '{Path(path).name}' from its suffix '{suffix or '(none)'}'; "
        f"name the file .onnx, .pt2 or .ts, or pass --format {'|'.join(FORMATS)}"
    )


def require_onnx() -> None:
    """Raise a one-line error unless ``onnx`` and ``onnxruntime`` are installed."""
    for module in ("onnx", "onnxruntime"):
        try:
            __import__(module)
        except ImportError:
            raise InputError(f"ONNX export needs the '{module}' package; {EXPORT_EXTRA}") from None


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence the exporters' deprecation and tracer warnings (the export is verified instead)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        yield


def _names(graph: nn.Module) -> list[str]:
    return list(graph.input_names)


def _write_onnx(graph: nn.Module, example: tuple[Tensor, ...], path: Path, static_batch: bool, opset: int) -> None:
    require_onnx()
    axes: dict[str, dict[int, str]] = {}
    for name in _names(graph):
        axes[name] = {} if static_batch else {0: "batch"}
        if name in graph.frame_axes:
            axes[name][graph.frame_axes[name]] = "frames"
    if not static_batch:
        axes["embedding"] = {0: "batch"}
    # torch >= 2.9 defaults to the torch.export-based exporter, which needs onnxscript; the
    # TorchScript-based one needs only onnx (older torch has no `dynamo` switch and uses it anyway)
    legacy = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    with quiet():
        torch.onnx.export(
            graph, example, str(path), input_names=_names(graph), output_names=["embedding"],
            dynamic_axes={k: v for k, v in axes.items() if v}, opset_version=opset, do_constant_folding=True,
            **legacy,
        )


def _fx_config() -> Any:
    try:
        import torch.fx.experimental._config as fx_config
    except ImportError:
        return None
    return fx_config if hasattr(fx_config, "backed_size_oblivious") else None


def example_batch(format: str, static_batch: int | None) -> int:
    """The batch size to trace with: ``static_batch``, else 1 -- except for ``torch.export`` on a
    torch without ``backed_size_oblivious``, which would specialise a batch of 1 (then 2)."""
    if static_batch is not None:
        return static_batch
    return 2 if format == "export" and _fx_config() is None else 1


@contextlib.contextmanager
def _size_one_is_generic() -> Iterator[None]:
    """Let ``torch.export`` trace an example batch of 1 without specialising the batch axis to 1."""
    fx_config = _fx_config()
    if fx_config is None:
        yield
        return
    with fx_config.patch(backed_size_oblivious=True):
        yield


def _write_export(graph: nn.Module, example: tuple[Tensor, ...], path: Path, static_batch: bool) -> None:
    from torch.export import Dim

    batch = None if static_batch else Dim("batch")
    frames = Dim("frames", min=int(graph.min_frames)) if graph.frame_axes else None
    shapes: list[dict[int, Any] | None] = []
    for name in _names(graph):
        dims: dict[int, Any] = {} if batch is None else {0: batch}
        if frames is not None and name in graph.frame_axes:
            dims[graph.frame_axes[name]] = frames
        shapes.append(dims or None)
    with quiet(), _size_one_is_generic():
        non_strict = {"strict": False} if "strict" in inspect.signature(torch.export.export).parameters else {}
        program = torch.export.export(graph, example, dynamic_shapes=tuple(shapes), **non_strict)
    torch.export.save(program, str(path))


def _write_torchscript(graph: nn.Module, example: tuple[Tensor, ...], path: Path) -> None:
    with quiet():
        traced = torch.jit.trace(graph, example, check_trace=False)
        torch.jit.save(traced, str(path))


def write(format: str, graph: nn.Module, example: tuple[Tensor, ...], path: Path, static_batch: bool,
          opset: int = ONNX_OPSET) -> None:
    """Write ``graph`` traced on ``example`` to ``path`` in ``format`` (see the module docstring)."""
    graph.eval()
    with torch.no_grad():
        if format == "onnx":
            _write_onnx(graph, example, path, static_batch, opset)
        elif format == "export":
            _write_export(graph, example, path, static_batch)
        elif format == "torchscript":
            _write_torchscript(graph, example, path)
        else:
            raise InputError(f"unknown export format '{format}'; use one of {', '.join(FORMATS)}")


def runner(format: str, path: Path, names: list[str], threads: int = 1) -> Callable[[tuple[Tensor, ...]], np.ndarray]:
    """``run(inputs) -> (B, D) float32 numpy`` for the file at ``path`` written in ``format``."""
    if format == "onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feeds = [i.name for i in session.get_inputs()]

        def run_onnx(inputs: tuple[Tensor, ...]) -> np.ndarray:
            named = dict(zip(names, (t.cpu().numpy() for t in inputs)))
            return np.asarray(session.run(None, {n: named[n] for n in feeds})[0], dtype=np.float32)

        return run_onnx
    if format == "export":
        with quiet():
            module = torch.export.load(str(path)).module()
    else:
        with quiet():
            module = torch.jit.load(str(path), map_location="cpu")

    def run_torch(inputs: tuple[Tensor, ...]) -> np.ndarray:
        with torch.inference_mode(), quiet():
            return module(*inputs).float().cpu().numpy()

    return run_torch
