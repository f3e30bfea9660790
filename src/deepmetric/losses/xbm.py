r"""Cross-batch memory (XBM; Wang, Zhang, Huang, Scott, "Cross-Batch Memory for Embedding
Learning", CVPR 2020, arXiv 1912.06798) around any pair loss that accepts a rectangular matrix.

The wrapper keeps a FIFO ring buffer of the last ``memory_size`` embeddings (detached) and their
labels. At a step with batch :math:`B` (N embeddings) and filled memory :math:`\mathcal{M}`
(:math:`m \le M` rows), the base loss sees ONE N x (N + m) pair matrix

.. math::

    \big[\, D(B, B) \;\big|\; D(B, \mathcal{M}) \,\big]

(rows = the batch's anchors, columns = batch :math:`\cup` memory) with the masks
``pos[i, j] = (y_i = y_j) and (i, j) is not (i, i)`` and ``neg[i, j] = (y_i != y_j)``, i.e.
``base.matrix_loss(matrix, pos_mask, neg_mask) + base.regularizer(batch)``. The memory columns
are constants: gradients reach the batch embeddings only (through rows and batch columns).
Memory and time are O(N (N + M) + M D): the N x N block is the base loss's own square matrix
(exact zero diagonal), the N x m block is computed once against the detached memory (for the
closed-form Euclidean losses with a backward pass for the batch rows only). Because the step
then overwrites the buffer in place (the enqueue), autograd keeps its own m x D copy of the
memory rows while a graph is taped: one extra copy of the buffer per step, freed by backward.
Measured cost: ``benchmarks/bench_xbm.py``.

Memory columns follow the ring-buffer SLOT order (not age order); every supported loss is
invariant to the column order except for tie-breaking between exactly equal entries.

**Which base losses work** (N x (N + m) matrices, anchors = rows):

* ``contrastive``: yes (every mask entry is an ordered pair: batch-batch pairs count in both
  directions, batch-memory pairs once; ``reduction="sum"`` is not halved for a rectangle).
* ``triplet`` (all / semihard / batch_hard, any metric): yes; positives and negatives of an
  anchor are read from its row only.
* ``multi_similarity``: yes (per-anchor log-sum-exps over the row, mean over the N anchors).
* ``npair`` with ``pairs="all"``: yes; ``pairs="one_per_class"`` needs the square batch
  matrix: :class:`~deepmetric.errors.ConfigError`.
* ``ranked_list``: yes. Every row is a query and its ranked list is the row: the formula
  (non-trivial sets, per-query weights, mean over queries) holds unchanged over a gallery of
  batch :math:`\cup` memory.
* ``lifted_structure``: no. :math:`J_{ij}` needs the negatives of BOTH members of a positive
  pair, i.e. the rows of the memory items too (an m x (N + m) matrix): ConfigError.
* ``angular``: no. :math:`f_{apn}` reads :math:`S_{pn}` from the positive's row (a memory
  positive's row again): ConfigError.
* ``osm_caa``: no. OSM's weights are per pair and would allow a rectangle, but CAA's pair
  attention :math:`\min(a_i, a_j)` needs classifier probabilities :math:`a_j` of the memory
  items (their logits under the current classifier, or stale ones stored at enqueue time) and
  its ``compute`` adds the classifier's cross-entropy; its ``matrix_loss`` takes a square matrix
  only. Not implemented: ConfigError.
* proxy / classifier losses (``proxy_anchor``, ``normalized_softmax``, ``center_structured``,
  ``triplet_hybrid``) and wrappers (``SymmetricalSynthesis``, ``Hybrid``) are not pair losses:
  ConfigError. (Wrap XBM in Hybrid instead: ``Hybrid(CrossBatchMemory(...))``.)

Any other :class:`~deepmetric.losses.base.PairLoss` is probed once at construction with a tiny
2 x 3 matrix; a loss whose ``matrix_loss`` rejects it raises ConfigError.

**Schedule.** ``start_step``: the first ``start_step`` training-mode forward calls return exactly
``base_loss(embeddings, labels)`` and do NOT fill the memory (as the official XBM code, which
enables the memory after a warm-up because the early, fast-changing embeddings make stale
memory entries useless). From call ``start_step`` on, the loss is computed against batch
:math:`\cup` memory, THEN the batch is enqueued (so a batch is never its own memory). In eval
mode nothing is enqueued or counted (the memory is read if the schedule has started).

Differences from the official code: the official XBM adds two losses,
``L(batch, batch) + w L(batch, memory)`` with the current batch enqueued first (so it appears in
the memory too); here it is one loss over the union of the batch and the memory (the current
batch is in the columns once, never twice).

**Checkpoints.** The buffer (``memory``, ``memory_labels``), its fill count ``filled``, its write
``pointer`` and the forward counter ``steps_seen`` are registered buffers, so the loss's
``state_dict`` (saved by the trainer) restores the memory exactly: a resumed run computes the
same next loss. Without ``embedding_dim`` the buffer is allocated at the first batch (in the
batch's dtype; float32 when allocated at construction); loading a state dict adopts its shape
and dtype.

**torchrun.** Under :class:`~deepmetric.training.distributed.GatheredLoss` the wrapper receives
the embeddings and labels gathered from all ranks; it enqueues what it receives, so every rank
holds the same memory of GLOBAL batches (and the loss stays the same function on every rank,
which keeps the gathered gradient exact). ``memory_size`` must then be at least the global
batch (per-rank batch x world size).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.function import FunctionCtx

from deepmetric.errors import ConfigError, DeepMetricError
from deepmetric.losses.base import MetricLoss, PairLoss

__all__ = ["CrossBatchMemory", "rectangular_support"]


class _DistancesToConstant(torch.autograd.Function):
    """Euclidean distances of ``x`` (N x D) to constant rows ``y`` (M x D), same values as
    :func:`deepmetric.functional.euclidean_distance_matrix`; the backward pass computes the
    gradient w.r.t. ``x`` only (one N x M x D product, none for ``y``)."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: Tensor, y: Tensor) -> Tensor:  # type: ignore[override]
        from deepmetric.functional.distances import euclidean_distance_matrix

        dist = euclidean_distance_matrix(x, y)
        ctx.save_for_backward(x, y, dist)
        return dist

    @staticmethod
    def backward(ctx: FunctionCtx, upstream: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        if torch.is_grad_enabled():
            raise ConfigError(
                "cross-batch memory's closed-form distance gradient has no second derivative; "
                "backward(create_graph=True) is not supported"
            )
        x, y, dist = ctx.saved_tensors  # type: ignore[attr-defined]
        h = torch.where(dist > 0, upstream * 0.5 / dist, torch.zeros_like(dist))
        grad_x = x * h.sum(dim=1, keepdim=True).mul_(2.0) - (h @ y).mul_(2.0)
        return grad_x, None


#: base losses whose formula needs more than the anchors' rows: class name -> reason
_SQUARE_ONLY: dict[str, str] = {
    "LiftedStructureLoss": "its J_ij reads the negatives of both members of a positive pair, i.e. "
    "the rows of memory items too",
    "AngularLoss": "its f_apn reads S_pn from the positive's row, i.e. the rows of memory items too",
    "OSMCAALoss": "its class-aware attention needs classifier probabilities of every pair's both "
    "members and its compute adds a cross-entropy term; its matrix_loss is square only",
}


def rectangular_support(base_loss: nn.Module) -> str | None:
    """``None`` when cross-batch memory can wrap ``base_loss``, else the reason it cannot."""
    if not isinstance(base_loss, PairLoss):
        return (
            "it is not a pair loss computed from one pair matrix (proxy, classifier and center "
            "losses, and wrappers such as symmetrical synthesis or Hybrid, are not)"
        )
    name = type(base_loss).__name__
    if name in _SQUARE_ONLY:
        return _SQUARE_ONLY[name]
    if type(base_loss).matrix_loss is PairLoss.matrix_loss:
        return "it does not implement matrix_loss(matrix, pos_mask, neg_mask)"
    if type(base_loss).compute is not PairLoss.compute and not base_loss.compute_is_matrix_loss:
        return "its own compute adds terms beyond matrix_loss + regularizer, which the memory would drop"
    if name == "NPairLoss" and getattr(base_loss, "pairs", "all") != "all":
        return 'N-pair with pairs="one_per_class" needs the square batch matrix (use pairs="all")'
    # probe: a 2 x 3 batch-by-candidates matrix with one positive and some negatives per row
    matrix = torch.tensor([[0.0, 0.6, 0.3], [0.6, 0.0, 0.8]])
    labels, ref = torch.tensor([0, 1]), torch.tensor([0, 1, 0])
    pos = (labels.view(-1, 1) == ref.view(1, -1)) & ~torch.eye(2, 3, dtype=torch.bool)
    neg = labels.view(-1, 1) != ref.view(1, -1)
    try:
        with torch.no_grad():
            value = base_loss.matrix_loss(matrix, pos, neg)
    except (DeepMetricError, RuntimeError, IndexError) as exc:
        return f"its matrix_loss rejects a rectangular N x (N + M) matrix ({str(exc).splitlines()[0]})"
    if not isinstance(value, Tensor) or value.numel() != 1:
        return "its matrix_loss does not return a scalar tensor"
    return None


class CrossBatchMemory(MetricLoss):
    r"""Cross-batch memory (Wang et al., CVPR 2020) around a pair loss; see the module docstring.

    Args:
        base_loss: a :class:`~deepmetric.losses.base.PairLoss` whose ``matrix_loss`` accepts a
            rectangular matrix (contrastive, triplet, multi_similarity, npair ``pairs="all"``,
            ranked_list). Others raise :class:`ConfigError`.
        memory_size: M, the number of embeddings kept (>= 1; must be >= the batch, checked at the
            first batch; the paper uses about the training-set size for small data sets).
        start_step: training-mode calls before the memory is used (and filled); 0 = from the
            first step.
        embedding_dim: D, to allocate the buffer at construction (else at the first batch).

    ``forward(embeddings, labels)``: N x D embeddings (with gradient), N labels.
    """

    def __init__(
        self,
        base_loss: nn.Module,
        memory_size: int,
        start_step: int = 0,
        embedding_dim: int | None = None,
    ) -> None:
        super().__init__()
        reason = rectangular_support(base_loss)
        if reason is not None:
            raise ConfigError(
                f"cross-batch memory cannot wrap {type(base_loss).__name__}: {reason}; use contrastive, "
                "triplet, multi_similarity, npair or ranked_list, or drop the memory (loss.memory_size=0)"
            )
        for what, value, low in (("memory_size", memory_size, 1), ("start_step", start_step, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"cross-batch memory needs an integer {what} >= {low}, got {value!r}")
        if embedding_dim is not None and (isinstance(embedding_dim, bool) or int(embedding_dim) < 1):
            raise ConfigError(f"cross-batch memory needs embedding_dim >= 1, got {embedding_dim!r}")
        self.base_loss: PairLoss = base_loss
        self.memory_size = int(memory_size)
        self.start_step = int(start_step)
        dim = 0 if embedding_dim is None else int(embedding_dim)
        self.register_buffer("memory", torch.zeros(self.memory_size if dim else 0, dim))
        self.register_buffer("memory_labels", torch.full((self.memory_size,), -1, dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))
        self.register_buffer("steps_seen", torch.zeros((), dtype=torch.long))

    # ------------------------------------------------------------------ contracts
    @property
    def higher_is_closer(self) -> bool:
        """The base loss's matrix kind: True for similarities, False for distances."""
        return self.base_loss.higher_is_closer

    def wrapped_losses(self) -> list[nn.Module]:
        return [self.base_loss]

    # ------------------------------------------------------------------ memory
    def memory_contents(self) -> tuple[Tensor, Tensor]:
        """The filled part of the memory in SLOT order: ``(m x D embeddings, m labels)``."""
        m = int(self.filled)
        return self.memory[:m], self.memory_labels[:m]

    def memory_in_age_order(self) -> tuple[Tensor, Tensor]:
        """The filled memory oldest first (the order a FIFO queue would hold)."""
        m = int(self.filled)
        if m < self.memory_size:
            return self.memory[:m], self.memory_labels[:m]
        order = (torch.arange(m, device=self.memory.device) + int(self.pointer)) % m
        return self.memory[order], self.memory_labels[order]

    def reset_memory(self) -> None:
        """Empty the memory (the step counter is kept)."""
        self.filled.zero_()
        self.pointer.zero_()
        self.memory_labels.fill_(-1)

    @torch.no_grad()
    def enqueue(self, embeddings: Tensor, labels: Tensor) -> None:
        """Write ``embeddings`` (detached) and ``labels`` into the ring buffer, oldest out first."""
        n = embeddings.shape[0]
        self._check_batch(n)
        if self.memory.shape[1] != embeddings.shape[1] or self.memory.shape[0] != self.memory_size:
            if self.memory.numel() and int(self.filled) > 0:
                raise ConfigError(
                    f"embeddings have {embeddings.shape[1]} dims but the cross-batch memory holds "
                    f"{self.memory.shape[1]}-dim ones; build it with the model's embedding size"
                )
            self.memory = torch.zeros(
                self.memory_size, embeddings.shape[1], dtype=embeddings.dtype, device=embeddings.device
            )
        slots = (torch.arange(n, device=self.memory.device) + self.pointer) % self.memory_size
        self.memory[slots] = embeddings.detach().to(self.memory.dtype)
        self.memory_labels[slots] = labels.detach().to(self.memory_labels.device).long()
        self.pointer.copy_((self.pointer + n) % self.memory_size)
        self.filled.copy_(torch.clamp(self.filled + n, max=self.memory_size))

    def _check_batch(self, n: int) -> None:
        if n > self.memory_size:
            raise ConfigError(
                f"cross-batch memory_size={self.memory_size} is smaller than the batch ({n} embeddings, "
                f"gathered over all processes); set loss.memory_size >= {n}"
            )

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        key = prefix + "memory"
        saved = state_dict.get(key)
        if isinstance(saved, Tensor) and (saved.shape != self.memory.shape or saved.dtype != self.memory.dtype):
            if saved.dim() != 2 or saved.shape[0] not in (0, self.memory_size):
                raise ConfigError(
                    f"the checkpoint's cross-batch memory holds {tuple(saved.shape)} but memory_size is "
                    f"{self.memory_size}; resume with the run's own loss.memory_size"
                )
            self.memory = torch.empty_like(saved, device=self.memory.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ------------------------------------------------------------------ loss
    def memory_active(self) -> bool:
        """True once ``start_step`` training-mode calls have been made."""
        return int(self.steps_seen) >= self.start_step

    def candidate_matrix(self, embeddings: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(matrix, pos_mask, neg_mask)``: the N x (N + m) matrix of the batch against batch
        :math:`\\cup` memory and its masks (see the module docstring)."""
        base = self.base_loss
        n = embeddings.shape[0]
        mem, mem_labels = self.memory_contents()
        square = base.pair_matrix(embeddings)
        same = labels.view(-1, 1) == labels.view(1, -1)
        eye = torch.eye(n, dtype=torch.bool, device=labels.device)
        if mem.shape[0] == 0:
            return square, same & ~eye, ~same
        if mem.shape[1] != embeddings.shape[1]:
            raise ConfigError(
                f"embeddings have {embeddings.shape[1]} dims but the cross-batch memory holds "
                f"{mem.shape[1]}-dim ones; build it with the model's embedding size"
            )
        # the step enqueues into the buffer in place after this matrix is built: autograd must
        # keep its own copy of the rows it saved (one m x D copy, only when a graph is taped)
        will_write = self.training and torch.is_grad_enabled() and embeddings.requires_grad
        mem = mem.to(device=embeddings.device, dtype=embeddings.dtype, copy=will_write)
        if base.closed_form_distances and base.metric == "euclidean":
            rect = _DistancesToConstant.apply(embeddings, mem)
        else:
            rect = base.pair_matrix(embeddings, mem)
        same_mem = labels.view(-1, 1) == mem_labels.to(labels.device).view(1, -1)
        matrix = torch.cat([square, rect], dim=1)
        pos = torch.cat([same & ~eye, same_mem], dim=1)
        neg = torch.cat([~same, ~same_mem], dim=1)
        return matrix, pos, neg

    def compute(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        base = self.base_loss
        self._check_batch(embeddings.shape[0])
        if not self.memory_active():
            if self.training:
                self.steps_seen += 1
            return base(embeddings, labels)
        matrix, pos, neg = self.candidate_matrix(embeddings, labels)
        loss = base.matrix_loss(matrix, pos, neg) + base.regularizer(embeddings)
        if self.training:
            self.enqueue(embeddings, labels)
            self.steps_seen += 1
        return loss

    def extra_repr(self) -> str:
        return (
            f"memory_size={self.memory_size}, start_step={self.start_step}, "
            f"filled={int(self.filled)}, steps_seen={int(self.steps_seen)}"
        )
