"""Multi-process data-parallel training on torch.distributed.

Launched by ``torchrun`` (or ``deepmetric train --nproc N``), every process reads RANK,
WORLD_SIZE and LOCAL_RANK from the environment. Pair-based losses need every pair of the
global batch, so :class:`GatheredLoss` all-gathers the embeddings and labels of all ranks and
evaluates the wrapped loss on the concatenation (rank order). Only the local slice carries a
gradient, and that gradient is exact: the loss is the same function of all embeddings on every
rank and the other ranks' embeddings are constants to it. Summing the model gradients over
ranks (:func:`sync_gradients`) then gives exactly the single-process gradient of the whole
batch; loss-owned parameters (classifiers, proxies, centers) already receive the full gradient
on every rank and are averaged only to remove round-off drift.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

import torch
import torch.distributed as dist
from torch import Tensor, nn


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's global rank (0 when not distributed)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Number of processes (1 when not distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """Rank 0 writes checkpoints, logs and reports."""
    return rank() == 0


def init_from_env(backend: str | None = None) -> bool:
    """Initialise the process group from torchrun's environment; returns False when not launched
    by torchrun (WORLD_SIZE unset or 1). Backend: nccl on CUDA, gloo otherwise."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return dist.is_initialized()
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    dist.init_process_group(backend=backend)
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return True


def all_gather_with_grad(tensor: Tensor) -> Tensor:
    """Concatenate ``tensor`` from all ranks along dim 0 (rank order); the local slice keeps its
    autograd history, the others are constants. Ranks may hold different batch sizes."""
    if not is_distributed():
        return tensor
    sizes = [torch.zeros(1, dtype=torch.long, device=tensor.device) for _ in range(world_size())]
    dist.all_gather(sizes, torch.tensor([tensor.shape[0]], device=tensor.device))
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros((longest, *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
    padded[: tensor.shape[0]] = tensor.detach()
    gathered = [torch.empty_like(padded) for _ in range(world_size())]
    dist.all_gather(gathered, padded)
    parts = [g[: int(s.item())] for g, s in zip(gathered, sizes)]
    parts[rank()] = tensor
    return torch.cat(parts, dim=0)


class GatheredLoss(nn.Module):
    """Evaluate ``loss`` on the embeddings and labels of all ranks (see module docstring)."""

    def __init__(self, loss: nn.Module) -> None:
        super().__init__()
        self.loss = loss

    def wrapped_losses(self) -> list[nn.Module]:
        return [self.loss]

    def forward(self, outputs: Tensor | Mapping[str, Tensor], labels: Tensor) -> Tensor:
        """``outputs``: the model's embedding tensor, or its named outputs (each gathered)."""
        if isinstance(outputs, Tensor):
            return self.loss(all_gather_with_grad(outputs), all_gather_with_grad(labels))
        gathered = {k: all_gather_with_grad(v) for k, v in outputs.items()}
        return self.loss(gathered, all_gather_with_grad(labels))


def sync_gradients(model_params: Iterable[nn.Parameter], loss_params: Iterable[nn.Parameter] = ()) -> None:
    """Sum model gradients over ranks; average loss-parameter gradients (identical up to round-off)."""
    if not is_distributed():
        return
    for p in model_params:
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
    n = world_size()
    for p in loss_params:
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad.div_(n)


def broadcast_parameters(module: nn.Module, src: int = 0) -> None:
    """Make every rank start from rank ``src``'s parameters and buffers."""
    if not is_distributed():
        return
    for tensor in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(tensor.data, src=src)


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if is_distributed():
        dist.barrier()


def all_reduce_mean(value: float, device: torch.device | str = "cpu") -> float:
    """Mean of a Python number over ranks (for logging)."""
    if not is_distributed():
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / world_size()
