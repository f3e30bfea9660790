"""Clustering scores against explicit pair loops and the entropy definition of NMI."""

from __future__ import annotations

import itertools
import math
from collections import Counter

import numpy as np
import pytest

from deepmetric.evaluation import clustering_scores, kmeans_assignments, nmi_score, pairwise_f1_score


def reference_pairwise_f1(labels, clusters):
    tp = same_cluster = same_class = 0
    for i, j in itertools.combinations(range(len(labels)), 2):
        sc, sl = clusters[i] == clusters[j], labels[i] == labels[j]
        tp += sc and sl
        same_cluster += sc
        same_class += sl
    if tp == 0:
        return 0.0
    p, r = tp / same_cluster, tp / same_class
    return 2 * p * r / (p + r)


def reference_nmi(labels, clusters):
    n = len(labels)

    def entropy(values):
        return -sum(c / n * math.log(c / n) for c in Counter(values).values())

    joint = Counter(zip(labels, clusters))
    a, b = Counter(labels), Counter(clusters)
    mi = sum(c / n * math.log((c / n) / ((a[x] / n) * (b[y] / n))) for (x, y), c in joint.items())
    return mi / ((entropy(labels) + entropy(clusters)) / 2)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pairwise_f1_and_nmi_match_references(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 5, size=40).tolist()
    clusters = rng.integers(10, 16, size=40).tolist()  # cluster ids need not be 0..k-1
    assert pairwise_f1_score(np.array(labels), np.array(clusters)) == pytest.approx(
        reference_pairwise_f1(labels, clusters), abs=1e-12
    )
    assert nmi_score(np.array(labels), np.array(clusters)) == pytest.approx(reference_nmi(labels, clusters), abs=1e-10)


def test_f1_degenerate_cases_are_zero_not_nan():
    assert pairwise_f1_score(np.arange(6), np.arange(6)) == 0.0  # no same-class pair at all
    assert pairwise_f1_score(np.array([0, 0, 1, 1]), np.arange(4)) == 0.0  # all singleton clusters


@pytest.mark.parametrize("backend", ["sklearn", "faiss"])
def test_kmeans_recovers_separated_clusters(backend):
    if backend == "faiss":
        pytest.importorskip("faiss")
    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(3), 10)
    x = (np.eye(3)[labels] * 20 + rng.normal(scale=0.1, size=(30, 3))).astype(np.float32)
    clusters = kmeans_assignments(x, 3, backend=backend, n_init=3)
    assert reference_pairwise_f1(labels.tolist(), clusters.tolist()) == 1.0
    scores = clustering_scores(x, labels, metric="euclidean", backend=backend, n_init=3)
    assert scores == {"nmi": pytest.approx(1.0), "f1": pytest.approx(1.0)}
