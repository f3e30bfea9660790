"""The int64 ordering keys and the running top-k of the blocked exact search."""

from __future__ import annotations

import random

import torch

from deepmetric.evaluation.blocked_knn import RunningTopK, decode_keys, order_keys

SPECIAL = [float("-inf"), -3.5, -1.0, -1e-30, -0.0, 0.0, 1e-40, 1e-30, 0.25, 1.0, 7.0, float("inf")]


def test_keys_sort_by_value_descending_then_column_ascending():
    rng = random.Random(0)
    values = [rng.choice(SPECIAL) for _ in range(200)]
    cols = [rng.randrange(0, 2**31) for _ in range(200)]
    keys = order_keys(torch.tensor(values, dtype=torch.float32), torch.tensor(cols))
    by_key = sorted(range(200), key=lambda i: -int(keys[i]))
    by_rule = sorted(range(200), key=lambda i: (-values[i], cols[i]))  # -0.0 == 0.0 in Python
    assert [(values[i], cols[i]) for i in by_key] == [(values[i], cols[i]) for i in by_rule]


def test_keys_decode_to_the_same_value_and_column():
    values = torch.tensor(SPECIAL + [0.1, -0.1, 3.0e38], dtype=torch.float32)
    cols = torch.arange(values.numel()) * 997_001
    got_values, got_cols = decode_keys(order_keys(values, cols))
    assert torch.equal(got_cols, cols)
    assert torch.equal(got_values, values + 0.0)  # -0.0 comes back as +0.0 (they tie)


def test_sparse_merges_keep_the_best_k_of_everything_seen():
    g = torch.Generator().manual_seed(1)
    n_rows, k = 9, 4
    top = RunningTopK(n_rows, k, torch.device("cpu"))
    seen: list[list[tuple[float, int]]] = [[] for _ in range(n_rows)]
    for batch in range(6):
        m = int(torch.randint(0, 15, (), generator=g))
        rows = torch.randint(0, n_rows, (m,), generator=g)  # unsorted, repeated rows
        cols = torch.randperm(1000, generator=g)[:m] + 1000 * batch
        values = torch.randint(-3, 4, (m,), generator=g).float()  # many ties
        top.merge_sparse(0, rows, cols, values)
        for r, c, v in zip(rows.tolist(), cols.tolist(), values.tolist()):
            seen[r].append((v, c))
    idx, scores = top.result()
    thresholds = top.thresholds(0, n_rows)
    for r in range(n_rows):
        best = sorted(seen[r], key=lambda t: (-t[0], t[1]))[:k]
        got = list(zip(scores[r].tolist(), idx[r].tolist()))[: len(best)]  # later slots: empty
        assert got == best
        expected_threshold = best[-1][0] if len(best) == k else float("-inf")
        assert thresholds[r].item() == expected_threshold
