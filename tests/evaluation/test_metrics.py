"""evaluate_embeddings and the metric functions against slow explicit references.

The reference ranks every candidate of every query by brute force with an explicit tie rule
(better score first, then lower gallery index), then computes each metric with plain Python.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch

from deepmetric.errors import ConfigError, DataError, InputError
from deepmetric.evaluation import (
    evaluate_embeddings,
    knn_vote,
    map_at_r,
    r_precision,
    recall_at_k,
)
from exact_scores import exact_score_embeddings  # tests/evaluation/exact_scores.py


def _score(a, b, metric):
    if metric == "cosine":
        dot = sum(x * y for x, y in zip(a, b))
        return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))
    return -math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)))  # larger is better


def reference_metrics(gallery, g_labels, queries=None, q_labels=None, metric="cosine", k_values=(1, 2, 4, 8), knn_k=5):
    loo = queries is None
    if loo:
        queries, q_labels = gallery, g_labels
    G, Q = gallery.tolist(), queries.tolist()
    gl, ql = g_labels.tolist(), q_labels.tolist()
    recall = {k: [] for k in k_values}
    p1, rp, mapr, knn_ok, cen_ok = [], [], [], [], []
    excluded = 0
    for i, (q, y) in enumerate(zip(Q, ql)):
        cands = [j for j in range(len(G)) if not (loo and j == i)]
        ranking = sorted(cands, key=lambda j: (-_score(q, G[j], metric), j))
        rel = [gl[j] == y for j in ranking]
        R = sum(rel)
        # k-NN vote with the documented tie rule
        votes = Counter(gl[j] for j in ranking[:knn_k])
        top = max(votes.values())
        pred = next(gl[j] for j in ranking[:knn_k] if votes[gl[j]] == top)
        knn_ok.append(pred == y)
        # nearest centroid, own item left out, ties -> smallest label
        best_label, best = None, -math.inf
        for c in sorted(set(gl)):
            members = [G[j] for j in cands if gl[j] == c]
            if not members:
                continue
            if metric == "cosine":
                normed = [[v / math.sqrt(sum(t * t for t in m)) for v in m] for m in members]
                centre = [sum(col) for col in zip(*normed)]
            else:
                centre = [sum(col) / len(members) for col in zip(*members)]
            s = _score(q, centre, metric)
            if s > best:
                best_label, best = c, s
        cen_ok.append(best_label == y)
        if R == 0:
            excluded += 1
            continue
        for k in k_values:
            recall[k].append(any(rel[:k]))
        p1.append(rel[0])
        rp.append(sum(rel[:R]) / R)
        hits, ap = 0, 0.0
        for pos in range(R):
            if rel[pos]:
                hits += 1
                ap += hits / (pos + 1)
        mapr.append(ap / R)
    out = {f"recall@{k}": float(np.mean(v)) for k, v in recall.items()}
    out.update(
        {
            "precision@1": float(np.mean(p1)),
            "r_precision": float(np.mean(rp)),
            "map@r": float(np.mean(mapr)),
            "knn_accuracy": float(np.mean(knn_ok)),
            "centroid_accuracy": float(np.mean(cen_ok)),
            "n_queries_excluded": excluded,
            "n_queries": len(Q),
        }
    )
    return out


def tied_data(n, metric, seed):
    """Exact-score embeddings with ties and a duplicate (item 1 at 5), and labels with several
    multi-member classes plus singleton classes."""
    g = torch.Generator().manual_seed(seed)
    x = exact_score_embeddings(n, metric, g)
    x[5] = x[1]
    labels = torch.randint(0, 5, (n,), generator=g)
    labels[-3:] = torch.tensor([90, 91, 92])  # singleton classes
    return x, labels


RETRIEVAL_AND_CLASSIFICATION = ("recall@k", "precision@1", "r_precision", "map@r", "knn_accuracy", "centroid_accuracy")


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("chunk_size", [2, None])
def test_leave_one_out_matches_reference(metric, chunk_size):
    x, y = tied_data(36, metric, seed=0)
    got = evaluate_embeddings(x, y, metrics=RETRIEVAL_AND_CLASSIFICATION, metric=metric, chunk_size=chunk_size)
    ref = reference_metrics(x, y, metric=metric)
    assert got["n_queries_excluded"] == ref["n_queries_excluded"] == 3
    assert set(got) == set(ref)
    for key, value in ref.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_query_gallery_mode_matches_reference(metric):
    x, y = tied_data(45, metric, seed=1)
    q, ql, g, gl = x[:15], y[:15].clone(), x[15:], y[15:]
    ql[0] = 77  # a query class absent from the gallery
    got = evaluate_embeddings(g, gl, q, ql, metrics=RETRIEVAL_AND_CLASSIFICATION, metric=metric, k_values=(1, 3))
    ref = reference_metrics(g, gl, q, ql, metric=metric, k_values=(1, 3))
    assert got["n_queries_excluded"] >= 1
    for key, value in ref.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key


def test_continuous_data_faiss_and_exact_agree_with_reference():
    pytest.importorskip("faiss")
    g = torch.Generator().manual_seed(2)
    y = torch.randint(0, 6, (50,), generator=g)
    x = torch.randn(50, 8, generator=g) + torch.nn.functional.one_hot(y, 8).float() * 1.5
    ref = reference_metrics(x.double(), y)
    for backend in ("exact", "faiss"):
        got = evaluate_embeddings(x, y, metrics=RETRIEVAL_AND_CLASSIFICATION, backend=backend)
        for key, value in ref.items():
            assert got[key] == pytest.approx(value, abs=1e-9), (backend, key)


def test_numpy_inputs_and_selected_metrics_only():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(30, 4)).astype(np.float32), rng.integers(0, 3, size=30)
    got = evaluate_embeddings(x, y, metrics=("map@r",))
    assert set(got) == {"map@r", "n_queries", "n_queries_excluded"}
    ref = reference_metrics(torch.from_numpy(x), torch.from_numpy(y))
    assert got["map@r"] == pytest.approx(ref["map@r"], abs=1e-12)


def test_clustering_keys_are_perfect_on_separated_classes():
    g = torch.Generator().manual_seed(4)
    y = torch.arange(4).repeat_interleave(6)
    x = torch.eye(4)[y] * 10 + 0.01 * torch.randn(24, 4, generator=g)
    got = evaluate_embeddings(x, y, metrics=("nmi", "f1"))
    assert got["nmi"] == pytest.approx(1.0) and got["f1"] == pytest.approx(1.0)


def test_metric_functions_on_hand_computed_rows():
    hits = torch.tensor([[True, False, True, False], [False, True, True, False]])
    R = torch.tensor([2, 3])
    # row 0: R-prec 1/2, AP@R = (1/1)/2; row 1: R-prec 2/3, AP@R = (1/2 + 2/3)/3
    assert r_precision(hits, R) == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert map_at_r(hits, R) == pytest.approx((0.5 + (0.5 + 2 / 3) / 3) / 2)
    assert recall_at_k(hits, (1, 2)) == {"recall@1": 0.5, "recall@2": 1.0}
    with pytest.raises(InputError, match="larger k"):
        recall_at_k(hits, (5,))  # would silently miss hits beyond the searched neighbours
    # 3 and 5 tie with 2 votes each: the class seen first (nearer) wins
    assert knn_vote(torch.tensor([[3, 5, 5, 3, 1], [1, 2, 2, 2, 1]])).tolist() == [3, 2]
    assert knn_vote(torch.tensor([[3, 3, 5, 5, 1], [1, 2, 2, 2, 1]])).tolist() == [3, 2]
    assert knn_vote(torch.tensor([[5, 3, 3, 5, 1]])).tolist() == [5]


def test_bad_input_raises_clear_errors():
    x, y = torch.randn(10, 3), torch.randint(0, 2, (10,))
    nan = x.clone()
    nan[0, 0] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        evaluate_embeddings(nan, y)
    with pytest.raises(InputError, match="labels"):
        evaluate_embeddings(x, y[:9])
    with pytest.raises(DataError, match="empty"):
        evaluate_embeddings(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ConfigError, match="map@r"):
        evaluate_embeddings(x, y, metrics=("map@R",))
    with pytest.raises(DataError, match="at least 2"):
        evaluate_embeddings(x, torch.arange(10), metrics=("precision@1",))
    with pytest.raises(InputError, match="lower k_values"):
        evaluate_embeddings(x, y, metrics=("recall@k",), k_values=(10,))
    with pytest.raises(InputError, match="without"):
        evaluate_embeddings(x, y, query_embeddings=x)
