"""Embed a whole dataset with a model, in evaluation mode, without gradients."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from deepmetric.errors import DataError
from deepmetric.models.contracts import embedding_of

__all__ = ["class_names_of", "dataset_paths", "embed", "forward_batch", "to_device"]


def to_device(obj: Any, device: torch.device | str) -> Any:
    """Move a tensor, or the tensors inside tuples/lists/dicts, to ``device``."""
    if isinstance(obj, Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, (tuple, list)):
        return type(obj)(to_device(o, device) for o in obj)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    return obj


def forward_batch(model: nn.Module, inputs: Any) -> Tensor | dict[str, Tensor]:
    """``model(inputs)``, or ``model(*inputs)`` when a collate function returned a tuple (e.g.
    padded audio features and their lengths, or clips and their frame mask). The result is the
    embedding tensor, or the named outputs of a :class:`~deepmetric.models.contracts.MultiOutputModel`."""
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def embed(
    model: nn.Module,
    dataset: Any,
    batch_size: int = 128,
    device: torch.device | str | None = None,
    progress: bool = False,
    num_workers: int = 0,
    amp: bool = False,
) -> tuple[Tensor, Tensor]:
    """Embeddings (N x D float32, CPU) and labels (N, int64, CPU) of every item of ``dataset``, in
    order. The model runs in eval mode under ``torch.inference_mode``; its previous train/eval
    mode is restored afterwards. ``device`` defaults to the model's device."""
    if len(dataset) == 0:
        raise DataError("cannot embed an empty dataset; check the split and its class selection")
    if device is None:
        first = next(iter(model.parameters()), None)
        device = first.device if first is not None else torch.device("cpu")
    device = torch.device(device)
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
        collate_fn=getattr(dataset, "collate_fn", None), pin_memory=device.type == "cuda",
    )
    was_training = model.training
    model.eval()
    chunks: list[Tensor] = []
    labels: list[Tensor] = []
    iterator: Any = loader
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(loader, desc="embedding", unit="batch", leave=False)
    try:
        with torch.inference_mode(), torch.autocast(device.type, enabled=amp and device.type == "cuda"):
            for batch in iterator:
                inputs, target = batch[0], batch[1]
                out = embedding_of(model, forward_batch(model, to_device(inputs, device)))
                chunks.append(out.float().cpu())
                labels.append(torch.as_tensor(target).long().cpu())
    finally:
        model.train(was_training)
    return torch.cat(chunks), torch.cat(labels)


def dataset_paths(dataset: Any) -> Sequence[str]:
    """``dataset.paths`` as strings, or item indices when the dataset has no paths."""
    paths = getattr(dataset, "paths", None)
    if paths is None:
        return [str(i) for i in range(len(dataset))]
    return [str(p) for p in paths]


def class_names_of(dataset: Any) -> list[str] | None:
    """``dataset.class_names`` as strings (index = label), or None when the dataset has none."""
    names = getattr(dataset, "class_names", None)
    return None if names is None else [str(n) for n in names]
