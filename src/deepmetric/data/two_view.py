"""Two independently augmented views per item, batched in the NT-Xent (SimCLR) layout.

* :class:`TwoViews` -- ``TwoViews(dataset, transform)[i] == ((transform(x_i), transform(x_i)), y_i)``:
  the same raw item, augmented twice with independent random draws.
* :func:`collate_two_views` -- turns a list of such items into ``(inputs, labels)`` with
  ``2N`` rows: view a of item ``i`` at row ``i``, view b at row ``N + i``, and ``labels`` the
  items' labels twice (``labels[i] == labels[N + i]``). This is the layout the ``ntxent`` loss
  (:class:`deepmetric.losses.supcon.NTXentLoss`) reads and validates; ``supcon`` works on it too
  (its positives are then both views of an item plus every same-class row).
* :class:`TwoViewBatchSampler` -- batches of DISTINCT item indices, shuffled per epoch
  (``set_epoch``, seeded): NT-Xent counts every other row as a negative, so an item drawn twice in
  one batch would be its own negative. :class:`~deepmetric.data.samplers.PKSampler` batches work
  too when no class is sampled with replacement (``small_class_policy`` ``"drop"`` or ``"error"``
  or classes of >= K items).

Use from Python::

    train = TwoViews(folder_dataset(root, split="train", transform=None), model.train_transform())
    loader = DataLoader(train, batch_sampler=TwoViewBatchSampler(len(train), 256, seed=0),
                        collate_fn=collate_two_views)
    for inputs, labels in loader:  # inputs: 512 rows
        loss = ntxent(model(inputs), labels)

Use from a config: nothing is registered for it (no config key, no sampler name). The trainer
reads from its training dataset only ``labels`` (for the P x K sampler), items
``(input, label)`` and ``collate_fn``, all of which :class:`TwoViews` provides; so a loader of
your own (``data.name: mypackage.loaders:my_loader``, see :mod:`deepmetric.data.registry`) may
return ``TwoViews(base, transform)`` for the training split, with ``loss.name: ntxent`` (or
``supcon``) and ``sampler.small_class_policy: drop`` (no item twice in a batch). Caveat: the
trainer calls the loader for ``split="train"`` twice -- first with the model's training
transform (training batches), then with its evaluation transform (validation and support sets,
which must stay ONE view per item) -- and the two calls differ only in the transform passed, so
the loader must wrap the first call only. When that is awkward, train from Python as above.

A base dataset with a ``read(index)`` method (every :class:`~deepmetric.data.image_dataset.ImageDataset`)
is read raw, bypassing its own transform; any other dataset is indexed (``dataset[i][0]`` is the
input), so give it no random transform of its own. Item seeding: the trainer seeds torch,
numpy and ``random`` per item before ``dataset[i]``; the two ``transform`` calls then draw
different, reproducible augmentations.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler, default_collate

from deepmetric.errors import ConfigError, DataError


class TwoViews(Dataset):
    """``self[i] = ((transform(x_i), transform(x_i)), y_i)``: two independent augmentations.

    Args:
        dataset: the base dataset; read raw through ``dataset.read(i)`` when it has that method,
            else ``dataset[i][0]`` (the input) and ``dataset[i][1]`` (the label).
        transform: the augmentation, called twice per item (independent random draws).

    Exposes ``labels`` / ``class_names`` / ``paths`` of the base (when it has them) and
    ``collate_fn`` = :func:`collate_two_views`.
    """

    def __init__(self, dataset: Any, transform: Callable[[Any], Any]) -> None:
        if not callable(transform):
            raise ConfigError(
                f"TwoViews needs a callable transform (the augmentation), got {type(transform).__name__}; "
                "pass e.g. model.train_transform()"
            )
        self.dataset = dataset
        self.transform = transform
        labels = getattr(dataset, "labels", None)
        self.labels = None if labels is None else [int(v) for v in labels]
        self.class_names = getattr(dataset, "class_names", None)
        self.paths = getattr(dataset, "paths", None)
        self.collate_fn = collate_two_views

    @property
    def num_classes(self) -> int:
        if self.class_names is not None:
            return len(self.class_names)
        if self.labels is None:
            raise DataError("TwoViews' base dataset has neither class_names nor labels")
        return max(self.labels) + 1

    def __len__(self) -> int:
        return len(self.dataset)

    def raw(self, index: int) -> tuple[Any, Any]:
        """The un-augmented input and the label of item ``index``."""
        read = getattr(self.dataset, "read", None)
        if callable(read):
            label = self.labels[index] if self.labels is not None else self.dataset[index][1]
            return read(index), label
        item = self.dataset[index]
        return item[0], item[1]

    def __getitem__(self, index: int) -> tuple[tuple[Any, Any], Any]:
        x, label = self.raw(index)
        return (self.transform(x), self.transform(x)), label

    def __repr__(self) -> str:
        return f"TwoViews({self.dataset!r}, transform={self.transform!r})"


def collate_two_views(batch: Sequence[tuple[Any, ...]]) -> tuple[Any, torch.Tensor]:
    """Collate ``[((a_i, b_i), y_i, ...), ...]`` (N items) into ``(inputs, labels)`` with 2N rows:
    ``inputs = collate([a_0..a_{N-1}, b_0..b_{N-1}])`` and ``labels = [y_0..y_{N-1}, y_0..y_{N-1}]``.

    Anything after the label in an item is dropped. Raises :class:`DataError` for an item whose
    input is not a pair of views (naming the layout)."""
    views_a, views_b, labels = [], [], []
    for item in batch:
        views = item[0]
        if not isinstance(views, (tuple, list)) or len(views) != 2:
            raise DataError(
                "collate_two_views needs items ((view_a, view_b), label); got an input of type "
                f"{type(views).__name__}; wrap the dataset in deepmetric.data.two_view.TwoViews"
            )
        views_a.append(views[0])
        views_b.append(views[1])
        labels.append(item[1])
    inputs = default_collate(views_a + views_b)
    label_tensor = torch.as_tensor(labels)
    return inputs, torch.cat([label_tensor, label_tensor])


class TwoViewBatchSampler(Sampler[list[int]]):
    """Batches of ``batch_items`` distinct item indices (each batch is 2x that many rows after
    :func:`collate_two_views`), a fresh seeded shuffle per epoch.

    Args:
        num_items: dataset size.
        batch_items: items per batch, N (>= 2: an item needs at least one other as negative).
        seed: base seed; ``numpy.random.default_rng((seed, epoch))`` draws an epoch.
        drop_last: drop the last, smaller batch (default True: NT-Xent's difficulty depends on N;
            a last batch of ONE item has no negative, and its NT-Xent loss is 0).

    Call :meth:`set_epoch` at the start of every epoch.
    """

    def __init__(self, num_items: int, batch_items: int, seed: int = 0, drop_last: bool = True) -> None:
        if batch_items < 2:
            raise ConfigError(f"TwoViewBatchSampler needs batch_items >= 2, got {batch_items}; use e.g. 256")
        if num_items < (batch_items if drop_last else 2):
            raise DataError(
                f"TwoViewBatchSampler: {num_items} items cannot fill one batch of {batch_items}; lower "
                "batch_items or set drop_last=False"
            )
        self.num_items = int(num_items)
        self.batch_items = int(batch_items)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_items // self.batch_items
        return -(-self.num_items // self.batch_items)

    def __iter__(self) -> Iterator[list[int]]:
        order = np.random.default_rng((self.seed, self.epoch)).permutation(self.num_items)
        for start in range(0, len(self) * self.batch_items, self.batch_items):
            yield [int(i) for i in order[start:start + self.batch_items]]


__all__ = ["TwoViewBatchSampler", "TwoViews", "collate_two_views"]
