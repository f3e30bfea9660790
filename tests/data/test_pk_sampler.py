"""P x K sampler: exact batch composition, coverage, seeds and epochs, distributed ranks, errors."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from deepmetric.data.samplers import PKSampler
from deepmetric.errors import ConfigError, DataError


def uneven_labels(seed: int = 0) -> list[int]:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(4, 15, size=12)
    labels = np.repeat(np.arange(12), sizes)
    return rng.permutation(labels).tolist()


def assert_pk(batch: list[int], labels: list, p: int, k: int) -> None:
    counts = Counter(labels[i] for i in batch)
    assert len(batch) == p * k
    assert len(counts) == p and set(counts.values()) == {k}


@pytest.mark.parametrize("p,k", [(2, 2), (4, 3), (5, 4)])
def test_every_batch_has_p_classes_times_k_items(p, k):
    labels = uneven_labels()
    sampler = PKSampler(labels, p=p, k=k, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) > 0
    for batch in batches:
        assert_pk(batch, labels, p, k)
        # no item twice in a batch when every class has >= k items
        assert len(set(batch)) == len(batch)
    assert all(isinstance(i, int) for i in batches[0])


def test_one_epoch_uses_nearly_every_item():
    labels = uneven_labels(1)
    sampler = PKSampler(labels, p=3, k=4, seed=0, drop_last=False)
    seen = {i for batch in sampler for i in batch}
    assert len(seen) == len(labels)  # ceil(n / k) chunks per class, the last one completed


def test_repeatable_by_seed_and_changed_by_epoch():
    labels = uneven_labels()
    a, b = PKSampler(labels, 4, 2, seed=3), PKSampler(labels, 4, 2, seed=3)
    assert list(a) == list(b)
    assert list(a) != list(PKSampler(labels, 4, 2, seed=4))
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    a.set_epoch(0)
    assert list(a) == first


def test_ranks_draw_disjoint_batches_that_together_form_the_global_sequence():
    labels = np.repeat(np.arange(10), 8).tolist()  # 20 chunks of 4 -> 20 / (2 * 2) = 5 batches per rank
    samplers = [PKSampler(labels, p=2, k=4, seed=9, rank=r, world_size=2) for r in range(2)]
    per_rank = [list(s) for s in samplers]
    assert [len(b) for b in per_rank] == [5, 5] == [len(s) for s in samplers]
    items = [{i for batch in batches for i in batch} for batches in per_rank]
    assert items[0].isdisjoint(items[1])
    assert items[0] | items[1] == set(range(80))
    glob = samplers[0].global_batches()
    assert per_rank[0] == glob[0::2] and per_rank[1] == glob[1::2]
    for batches in per_rank:
        for batch in batches:
            assert_pk(batch, labels, 2, 4)


def test_small_class_policies():
    labels = [0] * 5 + [1] * 5 + [2] * 2 + [3] * 1 + [4] * 6
    replace = PKSampler(labels, p=3, k=4, small_class_policy="replace", batches_per_epoch=30)
    used = Counter()
    for batch in replace:
        assert_pk(batch, labels, 3, 4)
        used.update(labels[i] for i in set(batch))
    assert used[2] > 0 and used[3] > 0  # small classes still appear (with repeated items)

    drop = PKSampler(labels, p=3, k=4, small_class_policy="drop", batches_per_epoch=10)
    assert drop.dropped_classes == [2, 3]
    assert {labels[i] for batch in drop for i in batch} == {0, 1, 4}

    with pytest.raises(DataError, match=r"fewer than k=4.*\[2, 3\]"):
        PKSampler(labels, p=2, k=4, small_class_policy="error")
    with pytest.raises(DataError, match="3 usable classes after dropping"):
        PKSampler(labels, p=4, k=4, small_class_policy="drop")


def test_errors_are_clear():
    with pytest.raises(DataError, match="fewer than p=5"):
        PKSampler([0, 0, 1, 1, 2, 2], p=5, k=2)
    with pytest.raises(DataError, match="single sample"):
        PKSampler(list(range(10)), p=2, k=2, small_class_policy="error")
    # replace: a single-item class is drawn k times (augmented views), even when every class is one
    single = PKSampler(list(range(10)), p=2, k=3, seed=0)
    assert all(len(set(b[:3])) == 1 and len(set(b[3:])) == 1 for b in single)
    with pytest.raises(DataError, match="no labels"):
        PKSampler([], p=2, k=2)
    with pytest.raises(ConfigError, match="small_class_policy"):
        PKSampler([0, 0, 1, 1], p=2, k=2, small_class_policy="ignore")
    with pytest.raises(ConfigError, match="rank"):
        PKSampler([0, 0, 1, 1], p=2, k=2, rank=2, world_size=2)
    with pytest.raises(ConfigError):
        PKSampler([0, 0, 1, 1], p=0, k=2)


def test_accepts_tensors_and_string_labels_and_feeds_a_dataloader():
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 2])
    batches = list(PKSampler(labels, p=2, k=2, batches_per_epoch=7))
    assert len(batches) == 7
    names = ["a", "a", "b", "b", "c", "c"]
    for batch in PKSampler(names, p=3, k=2, batches_per_epoch=3):
        assert_pk(batch, names, 3, 2)

    data = torch.arange(12).float()
    dataset = torch.utils.data.TensorDataset(data, torch.arange(12) // 3)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=PKSampler((torch.arange(12) // 3).tolist(), p=2, k=3))
    for _, y in loader:
        assert sorted(Counter(y.tolist()).values()) == [3, 3]


@pytest.mark.parametrize("seed", range(6))
def test_random_configurations_keep_the_pk_invariant_and_cover_the_data(seed):
    rng = np.random.default_rng(seed)
    num_classes = int(rng.integers(3, 15))
    sizes = rng.integers(1, 12, size=num_classes)
    sizes[0] = max(sizes[0], 2)
    labels = rng.permutation(np.repeat(np.arange(num_classes), sizes)).tolist()
    p, k = int(rng.integers(2, num_classes + 1)), int(rng.integers(1, 5))
    sampler = PKSampler(labels, p=p, k=k, seed=seed, drop_last=False)
    batches = list(sampler)
    for batch in batches:
        assert_pk(batch, labels, p, k)
    # one pass holds sum(ceil(n / k)) chunks; rounding up to whole batches covers all of them,
    # unless a class has more chunks than there are batches (a batch takes one chunk per class)
    chunks = [max(1, -(-int(n) // k)) for n in sizes]
    seen = {i for batch in batches for i in batch}
    if max(chunks) <= len(batches):
        assert seen == set(range(len(labels)))
    else:
        big = int(np.argmax(chunks))
        assert sum(labels[i] == big for batch in batches for i in batch) == k * len(batches)
