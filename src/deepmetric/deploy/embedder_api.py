"""The embedding API: ``deepmetric.load(RUN) -> Embedder``, then ``embedder.embed(items)``.

:class:`Embedder` IS an ``nn.Module``: calling it on a preprocessed batch runs the graph that
``deepmetric export`` writes (:func:`deepmetric.deploy.graph.embedding_graph`), so its output is
exactly what the exported model computes:

* ``embedder.preprocess(items)`` -> the batch: images ``(B, C, H, W)`` through the model's own
  evaluation transform; for the audio model ``(features (B, T, n_mels), lengths (B,))`` computed
  like the speech datasets compute them; for the tracklet model, whose items are clips (lists of
  frames of any length), ``(clips (B, T, C, H, W), mask (B, T) bool)``: every frame through the
  run's evaluation frame pipeline, the clips zero-padded to the longest one and ``mask`` True on
  the real frames, as the tracklet datasets batch them (:mod:`deepmetric.deploy.preprocess`);
* ``embedder(batch)`` (or ``embedder(features, lengths)``, ``embedder(clips, mask)``) -> ``(B, D)``
  embeddings;
* ``embedder.embed(items, batch_size=64)`` -> ``(N, D)`` float32 numpy, in order: in eval mode,
  under ``torch.inference_mode``, with a tqdm progress bar for lists longer than four batches
  unless ``progress`` says otherwise. For lists longer than two batches, ``DataLoader`` worker
  processes read, decode and transform items while the model runs; the first batches are small
  (:data:`RAMP`) and the very first is prepared in this process while the workers start, so the
  model waits for neither a process start nor a whole batch.

Items are those of :mod:`deepmetric.deploy.items` (paths, PIL images, uint8 arrays, tensors;
waveforms and audio files for the audio model; clips of such frames for the tracklet model). An
item of another type (or an empty clip) is a one-line :class:`~deepmetric.errors.InputError`
naming its position and type, raised before any work.
``embedder.card`` (:class:`~deepmetric.deploy.manifest.ModelCard`) says what the model takes.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from deepmetric.deploy.graph import (
    AudioGraph,
    ImageGraph,
    TrackletGraph,
    embedding_graph,
    example_inputs,
    input_kind_of,
)
from deepmetric.deploy.manifest import CheckpointRef, ImageInput, ModelCard
from deepmetric.deploy.preprocess import (
    AudioPreprocessor,
    ImagePreprocessor,
    TrackletPreprocessor,
    audio_frontend,
    describe_image_transform,
    tracklet_frontend,
)
from deepmetric.errors import DeepMetricError, InputError

__all__ = ["Embedder", "auto_workers", "batch_sizes", "load"]

#: sizes of the first batches when workers decode: the first is prepared in this process while the
#: workers start, so the model starts after a few items instead of a process start and a whole batch
RAMP = (4, 8, 16, 32)

Preprocessor = ImagePreprocessor | AudioPreprocessor | TrackletPreprocessor


class _Failure:
    """A one-line error raised while preparing an item, carried out of a loader worker intact."""

    def __init__(self, error: DeepMetricError) -> None:
        self.error = error


class _Items(Dataset):
    def __init__(self, items: Sequence[Any], preprocessor: Preprocessor) -> None:
        self.items, self.preprocessor = items, preprocessor

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Tensor | _Failure:
        try:
            return self.preprocessor(self.items[index], index)
        except DeepMetricError as exc:
            return _Failure(exc)


class _Collate:
    def __init__(self, collate: Any) -> None:
        self.collate = collate

    def __call__(self, batch: list[Tensor | _Failure]) -> Any:
        failed = next((b for b in batch if isinstance(b, _Failure)), None)
        return failed if failed is not None else self.collate(batch)


def batch_sizes(n_items: int, batch_size: int, ramp: bool) -> list[int]:
    """Sizes of the forward batches ``embed`` runs over ``n_items``: ``batch_size`` each (the last
    one the rest), the first ones :data:`RAMP` (capped by ``batch_size``) when ``ramp``, so that with
    decoding workers the model starts after a few items instead of a whole batch."""
    sizes, total = [], 0
    for size in (*(RAMP if ramp else ()), *([batch_size] * (n_items // batch_size + 1))):
        size = min(size, batch_size, n_items - total)
        if size <= 0:
            break
        sizes.append(size)
        total += size
    return sizes


def _index_batches(n_items: int, batch_size: int, ramp: bool) -> list[list[int]]:
    batches, start = [], 0
    for size in batch_sizes(n_items, batch_size, ramp):
        batches.append(list(range(start, start + size)))
        start += size
    return batches


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def auto_workers(n_items: int, batch_size: int, device: torch.device) -> int:
    """Decoding processes for ``embed``: none for two batches or fewer (starting workers costs more
    than it overlaps); else the cores torch's threads leave free (at least 1, at most 4; on a GPU
    all but one core, at most 8, as decoding is then the bottleneck)."""
    if n_items <= 2 * batch_size:
        return 0
    cpus = _available_cpus()
    if device.type == "cuda":
        return max(1, min(8, cpus - 1))
    return max(1, min(4, cpus - torch.get_num_threads()))


def _as_list(items: Sequence[Any]) -> list[Any]:
    """``items`` as a list; one path or image passed alone is an error (not a list of characters)."""
    from PIL import Image

    if isinstance(items, (str, os.PathLike, Image.Image)):
        raise InputError(f"pass a list of items, not one {type(items).__name__}; wrap a single item: embed([item])")
    return list(items)


def _model_attr(model: nn.Module, name: str) -> Any:
    """``model.<name>``, else that of the image embedder it wraps (``model.embedder`` in DeMAL,
    ``model.frame_model`` in the tracklet model), else None."""
    value = getattr(model, name, None)
    for inner in ("embedder", "frame_model"):
        if value is None and isinstance(getattr(model, inner, None), nn.Module):
            value = getattr(getattr(model, inner), name, None)
    return value


def _frame_size(card: ModelCard) -> tuple[int, int, int] | None:
    """``(C, H, W)`` of a tracklet model's frames (from the card), None for other models."""
    if card.input_kind != "tracklet" or card.image is None:
        return None
    return card.image.channels, card.image.height, card.image.width


class Embedder(nn.Module):
    """A trained model ready to embed raw items (see the module docstring). Build it with
    :func:`load`, or :meth:`from_model` for a model in memory."""

    def __init__(self, model: nn.Module, card: ModelCard, preprocessor: Preprocessor) -> None:
        super().__init__()
        self.graph: ImageGraph | AudioGraph | TrackletGraph = embedding_graph(model, _frame_size(card))
        self.card = card
        self.preprocessor = preprocessor
        self.eval()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_model(cls, model: nn.Module, config: Any, checkpoint: CheckpointRef) -> Embedder:
        """An Embedder around ``model`` (weights loaded) trained with run ``config``."""
        from deepmetric.version import __version__

        kind = input_kind_of(model)
        image: ImageInput | None = None
        audio = tracklet = None
        preprocessor: Preprocessor
        if kind == "audio_features":
            audio = audio_frontend(config, int(model.n_mels))
            preprocessor = AudioPreprocessor(audio)
        elif kind == "tracklet":
            image, tracklet, frame_transform = tracklet_frontend(config, model)
            preprocessor = TrackletPreprocessor(frame_transform)
        else:
            transform = model.eval_transform()
            image = describe_image_transform(transform, model.input_size)
            preprocessor = ImagePreprocessor(transform, image.mode)
        graph = embedding_graph(model, None if image is None or tracklet is None
                                else (image.channels, image.height, image.width))
        normalize = _model_attr(model, "normalize")
        if not isinstance(normalize, bool):  # ask the model itself
            was = model.training
            model.eval()
            with torch.inference_mode():
                device = next(model.parameters()).device
                out = graph(*(t.to(device) for t in example_inputs(graph, 2)))
            model.train(was)
            normalize = bool(torch.allclose(out.norm(dim=1), torch.ones_like(out[:, 0]), atol=1e-4))
        card = ModelCard(
            input_kind=kind, image=image, audio=audio, tracklet=tracklet,
            embedding_dim=int(model.embedding_dim), normalize=normalize, model_name=str(config.model.name),
            backbone=_model_attr(model, "backbone_name"), deepmetric_version=__version__, checkpoint=checkpoint,
        )
        return cls(model, card, preprocessor)

    # ------------------------------------------------------------------ properties
    @property
    def model(self) -> nn.Module:
        """The trained network (its forward may return named outputs)."""
        return self.graph.model

    @property
    def input_kind(self) -> str:
        """``"image"``, ``"audio_features"`` or ``"tracklet"``."""
        return self.card.input_kind

    @property
    def embedding_dim(self) -> int:
        return self.card.embedding_dim

    @property
    def device(self) -> torch.device:
        first = next(self.parameters(), None)
        return first.device if first is not None else torch.device("cpu")

    # ------------------------------------------------------------------ forward
    def forward(self, *inputs: Any) -> Tensor:
        """Embeddings ``(B, D)`` of a preprocessed batch: ``images``, ``features, lengths``,
        ``clips, mask``, or the tuple :meth:`preprocess` returns for the audio and tracklet models."""
        if len(inputs) == 1 and isinstance(inputs[0], (tuple, list)):
            inputs = tuple(inputs[0])
        return self.graph(*inputs)

    def preprocess(self, items: Sequence[Any]) -> Tensor | tuple[Tensor, Tensor]:
        """The model input of ``items``, in the main process (see the module docstring)."""
        items = _as_list(items)
        for index, item in enumerate(items):
            self.preprocessor.check(item, index)
        if not items:
            raise InputError("preprocess needs at least one item; pass a non-empty list")
        return self.preprocessor.collate([self.preprocessor(item, i) for i, item in enumerate(items)])

    def embed(
        self,
        items: Sequence[Any],
        batch_size: int = 64,
        device: str | torch.device | None = None,
        progress: bool | None = None,
        num_workers: int | None = None,
    ) -> np.ndarray:
        """``(N, D)`` float32 embeddings of ``items``, in order (see the module docstring).

        ``device`` moves the Embedder there first (None: where it is). ``num_workers`` decoding
        processes (None: :func:`auto_workers`). ``progress`` None: a bar for more than four batches.
        """
        from deepmetric.training.embed import to_device

        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        items = _as_list(items)
        for index, item in enumerate(items):
            self.preprocessor.check(item, index)
        if not items:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        if device is not None:
            from deepmetric.training.seed import resolve_device

            self.to(resolve_device(str(device)))
        target = self.device
        workers = auto_workers(len(items), batch_size, target) if num_workers is None else int(num_workers)
        batches = self._batches(items, batch_size, workers, pin=target.type == "cuda")
        show = len(items) > 4 * batch_size if progress is None else bool(progress)
        bar = None
        if show:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(items), desc="embedding", unit="item", leave=False)
        out = np.empty((len(items), self.embedding_dim), dtype=np.float32)
        start = 0
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode():
                for batch in batches:
                    if isinstance(batch, _Failure):
                        raise batch.error
                    emb = self(to_device(batch, target))
                    out[start : start + emb.shape[0]] = emb.float().cpu().numpy()
                    start += emb.shape[0]
                    if bar is not None:
                        bar.update(emb.shape[0])
        finally:
            batches.close()  # stops the workers at once when an item failed
            self.train(was_training)
            if bar is not None:
                bar.close()
        return out

    def _batches(self, items: list[Any], batch_size: int, workers: int, pin: bool) -> Generator[Any, None, None]:
        """Prepared batches of ``items`` in order (a :class:`_Failure` for an item that failed).

        With ``workers``, the loader's processes start first and prepare batches 2, 3, ... while
        this process prepares the (small, :data:`RAMP`) first batch, and the model then runs while
        they prepare the next ones.
        """
        dataset, collate = _Items(items, self.preprocessor), _Collate(self.preprocessor.collate)
        index_batches = _index_batches(len(items), batch_size, ramp=workers > 0)
        head, tail = (index_batches[0], index_batches[1:]) if workers > 0 else ([], index_batches)
        loader: Iterator[Any] = iter(())
        if tail:  # iter() starts the workers now
            loader = iter(DataLoader(dataset, batch_sampler=tail, num_workers=workers, collate_fn=collate,
                                     pin_memory=pin))
        if head:
            yield collate([dataset[i] for i in head])
        yield from loader

    def __repr__(self) -> str:  # the card, not the whole network
        return f"Embedder({self.extra_repr()})"

    def extra_repr(self) -> str:
        c = self.card
        return (f"model={c.model_name!r}, input={c.input_kind}, embedding_dim={c.embedding_dim}, "
                f"normalize={c.normalize}, checkpoint={c.checkpoint.which!r} (step {c.checkpoint.step})")


def _checkpoint_step(path: Path) -> int | None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - the step is informative only; load_trained reports bad files
        return None
    step = state.get("step") if isinstance(state, dict) else None
    return int(step) if isinstance(step, int) else None


def load(run: str | Path, which: str = "best", device: str | torch.device = "auto",
         model: nn.Module | None = None) -> Embedder:
    """The :class:`Embedder` of a trained run: ``run`` is a run folder (``which``: ``best``, else
    ``last`` when the run has no best checkpoint) or a checkpoint file inside one; ``device``:
    ``auto`` (CUDA when present), ``cpu``, ``cuda:1`` ...; ``model``: an object to load the
    weights into, for a run trained with ``fit(model=...)`` whose class this process cannot
    rebuild from the run's config (the error then says so)."""
    from deepmetric.deploy.source import checkpoint_ref, resolve_checkpoint
    from deepmetric.training import load_trained
    from deepmetric.training.seed import resolve_device

    run_dir, name = resolve_checkpoint(run, which)
    model, _, config = load_trained(run_dir, which=name, device=resolve_device(str(device)), model=model,
                                    with_loss=False)
    ref = checkpoint_ref(run_dir, name, _checkpoint_step(run_dir / "checkpoints" / f"{name}.pt"))
    return Embedder.from_model(model, config, ref)
