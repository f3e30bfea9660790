"""Item seeds of training batches: one process unchanged, several processes never share seeds."""

from __future__ import annotations

from deepmetric.training.seed import derive_seed
from deepmetric.training.views import seeded_batches


def test_one_process_keys_items_by_batch_and_position() -> None:
    batches = [[5, 3], [7, 1]]
    expected = [[(i, derive_seed(11, "item", 2, b, j)) for j, i in enumerate(batch)] for b, batch in enumerate(batches)]
    assert seeded_batches(batches, 11, 2) == expected


def test_ranks_use_the_seeds_of_their_global_batches() -> None:
    # global order of one epoch: batches g0..g3; rank 0 takes g0, g2 and rank 1 takes g1, g3
    global_batches = [[0, 1], [2, 3], [4, 5], [6, 7]]
    single = seeded_batches(global_batches, 4, 0)
    rank0 = seeded_batches(global_batches[0::2], 4, 0, rank=0, world_size=2)
    rank1 = seeded_batches(global_batches[1::2], 4, 0, rank=1, world_size=2)
    assert rank0 == single[0::2] and rank1 == single[1::2]  # what one process would draw for the same batch
    seeds0 = {s for batch in rank0 for _, s in batch}
    seeds1 = {s for batch in rank1 for _, s in batch}
    assert not seeds0 & seeds1
