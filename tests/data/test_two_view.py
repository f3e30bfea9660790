"""TwoViews, collate_two_views and TwoViewBatchSampler build the NT-Xent two-view layout."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from deepmetric.data.two_view import TwoViewBatchSampler, TwoViews, collate_two_views
from deepmetric.errors import ConfigError, DataError, InputError
from deepmetric.losses import build_loss


class Items(Dataset):
    """Item i is the vector [i, i, i] with label i % 3."""

    def __init__(self, n: int = 10) -> None:
        self.labels = [i % 3 for i in range(n)]
        self.class_names = ["a", "b", "c"]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return torch.full((3,), float(i)), self.labels[i]


class Readable(Items):
    """Like an ImageDataset: ``read`` gives the raw item; ``__getitem__`` applies its own transform."""

    def read(self, i: int):
        return torch.full((3,), float(i))

    def __getitem__(self, i: int):
        return self.read(i) * 1000.0, self.labels[i]


def jitter(x: torch.Tensor) -> torch.Tensor:
    return x + torch.rand(x.shape)


def test_two_views_are_independent_augmentations_of_the_same_item() -> None:
    torch.manual_seed(0)
    data = TwoViews(Items(), jitter)
    (a, b), label = data[4]
    assert label == 1 and len(data) == 10
    assert not torch.equal(a, b)
    assert ((a - 4.0).abs() < 1).all() and ((b - 4.0).abs() < 1).all()
    assert data.labels == Items().labels and data.class_names == ["a", "b", "c"] and data.num_classes == 3
    assert data.collate_fn is collate_two_views
    # a dataset with read() is read raw, bypassing its own transform
    (a, b), _ = TwoViews(Readable(), jitter)[4]
    assert ((a - 4.0).abs() < 1).all()


def test_collate_builds_the_ntxent_layout() -> None:
    data = TwoViews(Items(), lambda x: x)
    inputs, labels = collate_two_views([data[i] for i in (2, 7, 5)])
    assert inputs.shape == (6, 3)
    assert inputs[:, 0].tolist() == [2.0, 7.0, 5.0, 2.0, 7.0, 5.0]  # view a rows, then view b rows
    assert labels.tolist() == [2, 1, 2, 2, 1, 2]
    with pytest.raises(DataError, match="TwoViews"):
        collate_two_views([(torch.zeros(3), 0)])


def test_sampler_batches_are_distinct_seeded_and_cover_the_data() -> None:
    sampler = TwoViewBatchSampler(10, 4, seed=1)
    assert len(sampler) == 2
    batches = list(sampler)
    assert [len(b) for b in batches] == [4, 4]
    flat = [i for b in batches for i in b]
    assert len(set(flat)) == 8
    assert list(sampler) == batches  # same epoch, same draw
    sampler.set_epoch(1)
    assert list(sampler) != batches
    loose = TwoViewBatchSampler(9, 4, drop_last=False)
    assert len(loose) == 3 and sorted(i for b in loose for i in b) == list(range(9))
    assert [len(b) for b in loose] == [4, 4, 1]
    with pytest.raises(ConfigError, match="batch_items"):
        TwoViewBatchSampler(10, 1)
    with pytest.raises(DataError, match="cannot fill"):
        TwoViewBatchSampler(3, 4)


def test_loader_batches_feed_ntxent_and_a_wrong_layout_is_refused() -> None:
    torch.manual_seed(2)
    data = TwoViews(Items(12), jitter)
    loader = DataLoader(data, batch_sampler=TwoViewBatchSampler(len(data), 4, seed=0),
                        collate_fn=data.collate_fn)
    loss = build_loss("ntxent")
    for inputs, labels in loader:
        assert inputs.shape == (8, 3) and torch.equal(labels[:4], labels[4:])
        out = loss(inputs, labels)
        assert torch.isfinite(out)
    # a P x K style batch (views of an item next to each other) is not the layout
    inputs = torch.randn(8, 3)
    with pytest.raises(InputError, match="two-view layout"):
        loss(inputs, torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))


def test_bad_transform() -> None:
    with pytest.raises(ConfigError, match="callable"):
        TwoViews(Items(), None)  # type: ignore[arg-type]
