"""The P x K class-balanced batch sampler of deep metric learning.

Every batch holds exactly ``P`` distinct classes with ``K`` items each (Schroff et al. 2015,
"FaceNet"; Hermans et al. 2017, "In Defense of the Triplet Loss for Person Re-Identification"),
so every anchor has ``K - 1`` positives and ``(P - 1) K`` negatives in the batch.

How an epoch is drawn (all from ``numpy.random.default_rng((seed, epoch))``, so it is the same on
every machine and every rank):

1. Each class's items are shuffled and cut into *chunks* of ``K``. A class with ``n >= K``
   items gives ``ceil(n / K)`` chunks; the last one is completed with other items of the same
   class drawn without repetition inside the chunk, so one pass uses every item.
2. Batches are formed one by one: ``P`` distinct classes are drawn without replacement with
   probability proportional to the chunks they still have, and one chunk is taken from each.
   A class holding as many chunks as there are full batches left in the pool is always taken,
   and so is a class with chunks left from an earlier pass, so every chunk is used. When fewer than ``P``
   classes have chunks left, a fresh pass (step 1) is added to the pool.
3. The epoch is a global sequence of ``batches_per_epoch * world_size`` batches; rank ``r``
   takes batches ``r, r + world_size, ...``, so ranks never share a batch and, within one pass,
   never share an item.

Classes with fewer than ``K`` items follow ``small_class_policy``:

* ``"replace"`` (default): the class gives one chunk per pass holding all its items, completed
  by drawing from them with replacement (repeated items are still augmented differently);
* ``"drop"``: the class is left out of training batches;
* ``"error"``: raise :class:`~deepmetric.errors.DataError` naming those classes.

Call :meth:`PKSampler.set_epoch` at the start of every epoch (as with
``torch.utils.data.DistributedSampler``); without it each epoch repeats the same draw.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from deepmetric.errors import ConfigError, DataError

SMALL_CLASS_POLICIES = ("replace", "drop", "error")


class PKSampler(Sampler[list[int]]):
    """Batch sampler yielding lists of ``p * k`` dataset indices: ``p`` classes x ``k`` items.

    Args:
        labels: the class of every dataset item (ints or any hashable).
        p: classes per batch.
        k: items per class in a batch.
        seed: base seed; with :meth:`set_epoch` it fixes the whole draw.
        batches_per_epoch: batches THIS rank yields per epoch. Default: one pass over the data,
            ``total_chunks / (p * world_size)`` rounded down (``drop_last=True``) or up.
        small_class_policy: ``"replace"``, ``"drop"`` or ``"error"`` for classes with < k items.
        rank, world_size: this process's place in distributed training.
        drop_last: with the default ``batches_per_epoch``, round the one-pass batch count down
            (True) or up (False; the last batches then start the next pass). Every batch is
            always complete.
    """

    def __init__(
        self,
        labels: Sequence[Hashable] | np.ndarray | torch.Tensor,
        p: int,
        k: int,
        seed: int = 0,
        batches_per_epoch: int | None = None,
        small_class_policy: str = "replace",
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = True,
    ) -> None:
        if not isinstance(p, int) or not isinstance(k, int) or p < 1 or k < 1:
            raise ConfigError(f"p and k must be positive integers, got p={p!r}, k={k!r}")
        if small_class_policy not in SMALL_CLASS_POLICIES:
            raise ConfigError(
                f"unknown small_class_policy '{small_class_policy}'; use one of {', '.join(SMALL_CLASS_POLICIES)}"
            )
        if not isinstance(world_size, int) or world_size < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        if batches_per_epoch is not None and batches_per_epoch < 1:
            raise ConfigError(f"batches_per_epoch must be >= 1, got {batches_per_epoch}")
        values = labels.tolist() if isinstance(labels, (torch.Tensor, np.ndarray)) else list(labels)
        if not values:
            raise DataError("the P x K sampler got no labels; the training split is empty")

        by_class: dict[Hashable, list[int]] = {}
        for index, label in enumerate(values):
            by_class.setdefault(label, []).append(index)
        if all(len(items) == 1 for items in by_class.values()) and small_class_policy != "replace":
            raise DataError(
                f"every one of the {len(by_class)} classes has a single sample, so no batch can hold a "
                "positive pair; metric learning needs at least 2 samples for some classes, or "
                "small_class_policy='replace' with augmented items (each drawn k times as different views)"
            )
        small = sorted((c for c, items in by_class.items() if len(items) < k), key=str)
        if small and small_class_policy == "error":
            raise DataError(
                f"{len(small)} class(es) have fewer than k={k} samples (e.g. {small[:5]}); lower k, or set "
                "small_class_policy='replace' (sample them with replacement) or 'drop' (leave them out)"
            )
        if small_class_policy == "drop":
            for c in small:
                del by_class[c]
        if len(by_class) < p:
            dropped = f" after dropping {len(small)} class(es) with fewer than k={k} samples" if small_class_policy == "drop" else ""
            raise DataError(
                f"the data has {len(by_class)} usable classes{dropped}, fewer than p={p} classes per batch; "
                "lower p, add classes" + (", or use small_class_policy='replace'" if dropped else "")
            )
        order = sorted(by_class, key=lambda c: (str(type(c)), c))
        self.classes = order
        self._items = [np.asarray(by_class[c], dtype=np.int64) for c in order]
        self._chunks_per_pass = np.asarray([max(1, math.ceil(len(v) / k)) for v in self._items], dtype=np.int64)
        self.p, self.k, self.seed = p, k, seed
        self.rank, self.world_size = rank, world_size
        self.small_class_policy = small_class_policy
        self.drop_last = drop_last
        self.dropped_classes = small if small_class_policy == "drop" else []
        if batches_per_epoch is None:
            per_rank = int(self._chunks_per_pass.sum()) / (p * world_size)
            batches_per_epoch = max(1, math.floor(per_rank) if drop_last else math.ceil(per_rank))
        self.batches_per_epoch = int(batches_per_epoch)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the draw of ``epoch`` (the same on every rank)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.batches_per_epoch

    def _class_chunks(self, rng: np.random.Generator, c: int) -> list[np.ndarray]:
        items, k = self._items[c], self.k
        n = len(items)
        if n < k:  # only reachable with the "replace" policy
            return [np.concatenate([rng.permutation(items), rng.choice(items, size=k - n, replace=True)])]
        shuffled = rng.permutation(items)
        chunks = [shuffled[i : i + k] for i in range(0, n - k + 1, k)]
        rest = n % k
        if rest:
            tail = shuffled[n - rest :]
            fill = rng.choice(shuffled[: n - rest], size=k - rest, replace=False)
            chunks.append(np.concatenate([tail, fill]))
        return chunks

    def _choose_classes(self, rng: np.random.Generator, remaining: np.ndarray, older: np.ndarray) -> np.ndarray:
        """``p`` distinct classes that still have chunks.

        Classes still holding chunks of an earlier pass (``older``), and classes holding at least
        as many chunks as there are full batches left in the pool, must be chosen now, or their
        chunks could not all be used; the other places go to classes drawn with probability
        proportional to their remaining chunks.
        """
        p = self.p
        batches_left = max(int(remaining.sum()) // p, 1)
        critical = np.flatnonzero((remaining >= batches_left) | (older > 0))
        if len(critical) >= p:
            tie_break = rng.permutation(len(critical))
            order = np.lexsort((tie_break, -remaining[critical]))
            return critical[order[:p]]
        weights = remaining.astype(np.float64)
        weights[critical] = 0.0
        rest = rng.choice(len(remaining), size=p - len(critical), replace=False, p=weights / weights.sum())
        return np.concatenate([critical, rest])

    def global_batches(self, epoch: int | None = None) -> list[list[int]]:
        """All ranks' batches of ``epoch`` (default: the current one), in global order."""
        epoch = self.epoch if epoch is None else epoch
        rng = np.random.default_rng([self.seed, epoch])
        num_classes = len(self._items)
        pool: list[list[np.ndarray]] = [[] for _ in range(num_classes)]
        remaining = np.zeros(num_classes, dtype=np.int64)
        older = np.zeros(num_classes, dtype=np.int64)  # chunks left over from earlier passes

        def add_pass() -> None:
            older[:] = remaining
            for c in range(num_classes):  # chunks are popped from the end: older passes first
                pool[c] = self._class_chunks(rng, c) + pool[c]
            remaining[:] = [len(chunks) for chunks in pool]

        batches: list[list[int]] = []
        total = self.batches_per_epoch * self.world_size
        add_pass()
        while len(batches) < total:
            if int((remaining > 0).sum()) < self.p:
                add_pass()
            chosen = self._choose_classes(rng, remaining, older)
            batch = []
            for c in chosen:
                batch.extend(pool[c].pop().tolist())
                remaining[c] -= 1
                older[c] = max(older[c] - 1, 0)
            batches.append(batch)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.global_batches()[self.rank :: self.world_size]
