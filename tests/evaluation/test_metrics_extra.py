"""The opt-in retrieval metrics of deepmetric.evaluation.metrics (precision@k in both
definitions, map@k, MRR, AMI) and the per-class breakdown, against explicit loops and sklearn;
the default output keeps its keys and values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_mutual_info_score

from deepmetric.errors import ConfigError
from deepmetric.evaluation.clustering import kmeans_assignments
from deepmetric.evaluation.metrics import (
    DEFAULT_METRICS,
    evaluate_embeddings,
    first_relevant_ranks,
    per_class_metrics,
)
from exact_scores import exact_score_embeddings  # tests/evaluation/exact_scores.py

EXTRA = ("precision@k", "precision_oml@k", "map@k", "mrr")


def _score(a, b, metric):
    if metric == "cosine":
        dot = sum(x * y for x, y in zip(a, b))
        return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))
    return -math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)))


def reference(gallery, gl, queries=None, ql=None, metric="cosine", k_values=(1, 2, 4, 8)):
    """Brute-force ranking (better score, then lower index) and every extra metric by hand."""
    loo = queries is None
    if loo:
        queries, ql = gallery, gl
    G, Q, gl, ql = gallery.tolist(), queries.tolist(), gl.tolist(), ql.tolist()
    prec = {k: [] for k in k_values}
    prec_oml = {k: [] for k in k_values}
    mapk = {k: [] for k in k_values}
    rr = []
    per_class: dict[int, list[tuple[float, float]]] = {}
    for i, (q, y) in enumerate(zip(Q, ql)):
        cands = [j for j in range(len(G)) if not (loo and j == i)]
        ranking = sorted(cands, key=lambda j: (-_score(q, G[j], metric), j))
        rel = [gl[j] == y for j in ranking]
        R = sum(rel)
        if R == 0:
            continue
        for k in k_values:
            top = rel[:k]
            prec[k].append(sum(top) / k)
            prec_oml[k].append(sum(top) / min(k, R))
            hits, total = 0, 0.0
            for pos, r in enumerate(top):
                if r:
                    hits += 1
                    total += hits / (pos + 1)
            mapk[k].append(total / min(k, R))
        rr.append(1.0 / (rel.index(True) + 1))
        hits, ap = 0, 0.0
        for pos in range(R):
            if rel[pos]:
                hits += 1
                ap += hits / (pos + 1)
        per_class.setdefault(y, []).append((float(rel[0]), ap / R))
    out = {f"precision@{k}": float(np.mean(v)) for k, v in prec.items()}
    out.update({f"precision_oml@{k}": float(np.mean(v)) for k, v in prec_oml.items()})
    out.update({f"map@{k}": float(np.mean(v)) for k, v in mapk.items()})
    out["mrr"] = float(np.mean(rr))
    classes = {
        c: {"recall@1": float(np.mean([a for a, _ in v])), "map@r": float(np.mean([b for _, b in v])), "count": len(v)}
        for c, v in per_class.items()
    }
    return out, classes


def tied_data(n, metric, seed):
    g = torch.Generator().manual_seed(seed)
    x = exact_score_embeddings(n, metric, g)
    x[5] = x[1]
    labels = torch.randint(0, 5, (n,), generator=g)
    labels[-3:] = torch.tensor([90, 91, 92])  # singleton classes: R = 0 as queries
    return x, labels


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("chunk_size", [3, None])
def test_leave_one_out_extras_match_loops(metric, chunk_size) -> None:
    x, y = tied_data(36, metric, seed=0)
    got = evaluate_embeddings(x, y, metrics=EXTRA, metric=metric, chunk_size=chunk_size)
    ref, classes = reference(x, y, metric=metric)
    assert got["n_queries_excluded"] == 3
    for key, value in ref.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key
    per_class = per_class_metrics(x, y, metric=metric, chunk_size=chunk_size)
    assert per_class.keys() == classes.keys()
    for c, values in classes.items():
        for key, value in values.items():
            assert per_class[c][key] == pytest.approx(value, abs=1e-12), (c, key)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_query_gallery_extras_match_loops(metric) -> None:
    x, y = tied_data(45, metric, seed=1)
    q, ql, g, gl = x[:15], y[:15].clone(), x[15:], y[15:]
    ql[0] = 77  # absent from the gallery: left out
    got = evaluate_embeddings(g, gl, q, ql, metrics=EXTRA, metric=metric, k_values=(1, 3, 5))
    ref, classes = reference(g, gl, q, ql, metric=metric, k_values=(1, 3, 5))
    for key, value in ref.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key
    per_class = per_class_metrics(g, gl, q, ql, metric=metric)
    assert {c: v["count"] for c, v in per_class.items()} == {c: v["count"] for c, v in classes.items()}
    assert 77 not in per_class


def test_mrr_counts_ranks_beyond_the_knn_list() -> None:
    # query 0's only same-class item is the farthest of 30: rank 29 (itself excluded)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(30, 4, generator=g, dtype=torch.float64)
    y = torch.arange(30)
    x[0] = torch.tensor([10.0, 0, 0, 0], dtype=torch.float64)
    x[1:] = x[1:] * 0.1
    x[29] = torch.tensor([-50.0, 0, 0, 0], dtype=torch.float64)
    y[29] = 0
    ranks = first_relevant_ranks(x, x, y, y, metric="euclidean", exclude=torch.arange(30))
    assert int(ranks[0]) == 29 and int(ranks[29]) == 29
    assert (ranks[1:29] == 0).all()  # no same-class candidate
    got = evaluate_embeddings(x, y, metrics=("mrr",), metric="euclidean", k_values=(1,))
    assert got["mrr"] == pytest.approx(1 / 29)


def test_per_class_counts_average_to_global_values() -> None:
    x, y = tied_data(40, "cosine", seed=4)
    per_class = per_class_metrics(x, y)
    total = sum(v["count"] for v in per_class.values())
    glob = evaluate_embeddings(x, y, metrics=("recall@k", "map@r"), k_values=(1,))
    assert total == glob["n_queries"] - glob["n_queries_excluded"]
    for key in ("recall@1", "map@r"):
        weighted = sum(v[key] * v["count"] for v in per_class.values()) / total
        assert weighted == pytest.approx(glob[key], abs=1e-12)


def test_ami_matches_sklearn_and_leaves_nmi_f1_unchanged() -> None:
    g = torch.Generator().manual_seed(5)
    y = torch.randint(0, 6, (80,), generator=g)
    x = torch.randn(80, 8, generator=g) + torch.nn.functional.one_hot(y, 8).float() * 2.0
    with_ami = evaluate_embeddings(x, y, metrics=("nmi", "f1", "ami"), seed=7)
    without = evaluate_embeddings(x, y, metrics=("nmi", "f1"), seed=7)
    assert with_ami["nmi"] == without["nmi"] and with_ami["f1"] == without["f1"]
    clusters = kmeans_assignments(torch.nn.functional.normalize(x, dim=1), 6, seed=7)
    assert with_ami["ami"] == pytest.approx(adjusted_mutual_info_score(y.numpy(), clusters), abs=1e-12)
    only = evaluate_embeddings(x, y, metrics=("ami",), seed=7)
    assert set(only) == {"ami", "n_queries"} and only["ami"] == with_ami["ami"]


def test_defaults_keep_their_keys_and_values() -> None:
    x, y = tied_data(36, "euclidean", seed=6)
    default = evaluate_embeddings(x, y, metric="euclidean")
    assert set(default) == {
        "n_queries", "n_queries_excluded", "recall@1", "recall@2", "recall@4", "recall@8", "precision@1",
        "r_precision", "map@r", "nmi", "f1", "knn_accuracy", "centroid_accuracy",
    }
    assert "ami" not in DEFAULT_METRICS and "mrr" not in DEFAULT_METRICS
    both = evaluate_embeddings(x, y, metric="euclidean", metrics=DEFAULT_METRICS + EXTRA + ("ami",))
    for key, value in default.items():
        assert both[key] == value, key
    assert both["precision@1"] == both["precision_oml@1"] == default["precision@1"]


def test_unknown_metric_and_bad_k() -> None:
    x, y = tied_data(20, "cosine", seed=7)
    with pytest.raises(ConfigError, match="precision_oml@k"):
        evaluate_embeddings(x, y, metrics=("precision_oml",))
    with pytest.raises(ConfigError, match="k_values"):
        evaluate_embeddings(x, y, metrics=("map@k",), k_values=(0,))
