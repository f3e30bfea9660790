"""``deepmetric export RUN -o FILE``: a run's evaluation embedding as an ONNX, torch.export or
TorchScript file, checked against PyTorch, with ``FILE.json`` describing it.

Every shipped model family exports: image models (``images``), the audio model (``features``,
``lengths``) and the video re-ID tracklet model (``clips (B, T, C, H, W)``, ``mask (B, T) bool``,
the frame count ``T`` dynamic in every format). :func:`export_run` loads the run with
:func:`deepmetric.deploy.load` (CPU), writes the graph the :class:`~deepmetric.deploy.Embedder`
runs (:mod:`deepmetric.deploy.graph`: the ``"embedding"`` output only) in the format of the file
suffix (:mod:`deepmetric.deploy.formats`), then checks the file before it is put in place:

1. traced with a batch of 1 (audio: 23 frames; clips: 4 frames), the file must reproduce PyTorch
   on that batch;
2. clips: the same shapes with padded frames (filled with noise, masked out) must give each clip
   the embedding PyTorch computes from its real frames alone, without padding or mask -- an
   independent check that padding is ignored;
3. unless ``static_batch``, it must reproduce PyTorch on a batch of 3 (clips: some of them padded)
   -- a model whose forward bakes the batch size into the graph fails here: "export with
   --static-batch";
4. audio: it must reproduce PyTorch on 31 frames (TorchScript tracing fixes the frame count of
   the audio model: export it to ONNX or torch.export); clips: on 7 frames and on 1 frame (a
   single-image "clip", as Market-1501 runs have). A format that fixed the frame count would fail
   here with the advice to use another format; all three keep it dynamic for clips.

"Reproduce" means max |exported - PyTorch| <= 1e-4 x max(1, max |PyTorch|). The file is written
to a temporary name first, so a failed export leaves nothing behind. The manifest
(:class:`~deepmetric.deploy.manifest.ExportManifest`) goes to ``FILE.json``. Every failure the
user can act on is a one-line :class:`~deepmetric.errors.InputError`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from deepmetric.deploy.formats import EXPORT_EXTRA, ONNX_OPSET, example_batch, require_onnx, resolve_format, runner, write
from deepmetric.deploy.graph import (
    AudioGraph,
    TrackletGraph,
    example_inputs,
    input_specs,
    output_specs,
    run_graph,
    unpadded_embeddings,
)
from deepmetric.deploy.manifest import ExportManifest, Verification, manifest_path
from deepmetric.errors import DeepMetricError, InputError

__all__ = ["CHECK_BATCH", "CHECK_CLIP_FRAMES", "CHECK_FRAMES", "CLIP_FRAMES", "EXPORT_FRAMES", "export_run"]

#: frames of the traced audio example, and of the check of a variable frame count
EXPORT_FRAMES, CHECK_FRAMES = 23, 31
#: frames of the traced clips, and the frame counts of the checks of a variable frame count
CLIP_FRAMES, CHECK_CLIP_FRAMES = 4, (7, 1)
#: batch size of the dynamic-batch check (differs from the traced batch)
CHECK_BATCH = 3
_TOLERANCE = 1e-4
_ADVICE = {
    "onnx": "try torch.export (-o FILE.pt2)",
    "export": "try ONNX (-o FILE.onnx)",
    "torchscript": "export to ONNX (-o FILE.onnx) or torch.export (-o FILE.pt2) instead",
}
_NAMES = {"onnx": "ONNX", "export": "torch.export", "torchscript": "TorchScript tracing"}


def _reason(exc: BaseException) -> str:
    """``Type: first line`` of an exception, short and without memory addresses."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = re.sub(r" at 0x[0-9a-fA-F]+", "", lines[0] if lines else "")
    return f"{type(exc).__name__}: {text[:200]}"


def _tolerance(reference: np.ndarray) -> float:
    return _TOLERANCE * max(1.0, float(np.abs(reference).max(initial=0.0)))


def _frame_plan(graph: nn.Module) -> tuple[int | None, tuple[int, ...]]:
    """``(traced frame count, checked other frame counts)`` of ``graph`` (None, () without frames)."""
    if isinstance(graph, AudioGraph):
        return EXPORT_FRAMES, (CHECK_FRAMES,)
    if isinstance(graph, TrackletGraph):
        return CLIP_FRAMES, CHECK_CLIP_FRAMES
    return None, ()


def _padded_clips(graph: TrackletGraph, batch: int, frames: int, seed: int) -> tuple[Tensor, Tensor]:
    """Clips of which the last (at least) has padded frames, filled with noise the mask hides."""
    clips, mask = example_inputs(graph, batch, frames=frames, seed=seed)
    mask[-1, max(1, frames // 2):] = False
    noise = torch.randn(clips.shape, generator=torch.Generator().manual_seed(seed + 1))
    return torch.where(mask[:, :, None, None, None], clips, noise), mask


def _difference(run: Callable[[tuple[Tensor, ...]], np.ndarray], reference: np.ndarray,
                inputs: tuple[Tensor, ...]) -> tuple[float, float, str | None]:
    """``(max abs difference, tolerance, error)`` of the exported file against ``reference`` on ``inputs``."""
    try:
        got = run(inputs)
    except Exception as exc:  # noqa: BLE001 - any runtime failure means the file cannot take these inputs
        return float("inf"), _tolerance(reference), _reason(exc)
    if got.shape != reference.shape:
        return float("inf"), _tolerance(reference), f"output shape {got.shape}, expected {reference.shape}"
    return float(np.abs(got - reference).max(initial=0.0)), _tolerance(reference), None


def _verify(fmt: str, path: Path, graph: nn.Module, model_name: str, batch: int, static: bool) -> Verification:
    """Steps 1-4 of the module docstring; raises :class:`InputError` naming the failed step."""
    run = runner(fmt, path, list(graph.input_names))
    traced, other_frames = _frame_plan(graph)
    what = _NAMES[fmt]
    diffs: list[float] = []
    tol = 0.0

    def check(inputs: tuple[Tensor, ...], failure: str, reference: np.ndarray | None = None) -> None:
        nonlocal tol
        want = run_graph(graph, inputs) if reference is None else reference
        diff, tol_, error = _difference(run, want, inputs)
        tol = max(tol, tol_)
        if error is not None or diff > tol_:
            found = error if error is not None else f"max abs difference {diff:.2e}"
            raise InputError(f"{failure} ({found})")
        diffs.append(diff)

    check(example_inputs(graph, batch, frames=traced, seed=1),
          f"the {what} file of '{model_name}' does not reproduce the model on the traced batch size; "
          f"{_ADVICE[fmt]}")
    padding = None
    if isinstance(graph, TrackletGraph) and traced is not None:
        clips, mask = _padded_clips(graph, batch, traced, seed=7)
        check((clips, mask),
              f"the {what} file of '{model_name}' does not ignore padded frames (a padded clip's embedding "
              f"differs from that of its real frames alone); {_ADVICE[fmt]}",
              reference=unpadded_embeddings(graph, clips, mask))
        padding = True
    batches = [batch]
    if not static:
        check(example_inputs(graph, CHECK_BATCH, frames=traced, seed=2),
              f"the forward of '{model_name}' cannot take a dynamic batch: traced with batch {batch}, its "
              f"{what} file fails at batch {CHECK_BATCH}; export with --static-batch N (a fixed batch size)")
        batches.append(CHECK_BATCH)
    for step, frames in enumerate(other_frames):
        check(example_inputs(graph, batches[-1], frames=frames, seed=3 + step),
              f"{what} fixes the number of frames of '{model_name}' (traced with {traced}, wrong at "
              f"{frames}); {_ADVICE[fmt]}")
    return Verification(export_batch=batch, checked_batches=batches,
                        checked_frames=None if traced is None else [traced, *other_frames],
                        padding_checked=padding, max_abs_diff=max(diffs), tolerance=tol)


def _export_failure(fmt: str, model_name: str, exc: BaseException) -> InputError:
    text = str(exc)
    if "Constraints violated (batch)" in text or ("batch" in text and "specialized" in text):
        return InputError(
            f"the forward of '{model_name}' cannot take a dynamic batch (torch.export specialised the batch "
            "size); export with --static-batch N (a fixed batch size)"
        )
    if "Constraints violated (frames)" in text:
        return InputError(f"torch.export cannot make the frame count of '{model_name}' dynamic; export to ONNX (-o FILE.onnx)")
    return InputError(f"{_NAMES[fmt]} cannot capture '{model_name}' ({_reason(exc)}); {_ADVICE[fmt]}")


def export_run(
    run: str | Path,
    output: str | Path,
    format: str | None = None,
    which: str = "best",
    static_batch: int | None = None,
    opset: int = ONNX_OPSET,
) -> ExportManifest:
    """Export run ``run`` (folder or checkpoint) to ``output`` (see the module docstring); returns
    the manifest written to ``<output>.json``."""
    from deepmetric.deploy.embedder_api import load

    output = Path(output).expanduser()
    fmt = resolve_format(output, format)
    if fmt == "onnx":
        require_onnx()
    if static_batch is not None and static_batch < 1:
        raise InputError(f"--static-batch must be >= 1, got {static_batch}")
    if output.is_dir():
        raise InputError(f"'{output}' is a folder; pass the file to write, e.g. {output / ('model' + output.suffix)}")
    embedder = load(run, which=which, device="cpu")
    graph, card = embedder.graph, embedder.card
    batch = example_batch(fmt, static_batch)
    example = example_inputs(graph, batch, frames=_frame_plan(graph)[0])
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.stem}.partial{output.suffix}")
    try:
        try:
            write(fmt, graph, example, partial, static_batch is not None, opset)
        except DeepMetricError:
            raise
        except ImportError as exc:
            raise InputError(f"{_NAMES[fmt]} needs '{exc.name}'; {EXPORT_EXTRA}") from None
        except Exception as exc:  # noqa: BLE001 - an exporter failure is reported in one line
            raise _export_failure(fmt, card.model_name, exc) from exc
        verification = _verify(fmt, partial, graph, card.model_name, batch, static_batch is not None)
        os.replace(partial, output)
    finally:
        partial.unlink(missing_ok=True)
    manifest = ExportManifest(
        **card.model_dump(), format=fmt, file=output.name,
        inputs=input_specs(graph, static_batch), outputs=output_specs(card.embedding_dim, static_batch),
        batch="dynamic" if static_batch is None else int(static_batch), opset=opset if fmt == "onnx" else None,
        torch_version=torch.__version__, verification=verification,
    )
    manifest.write(manifest_path(output))
    return manifest
