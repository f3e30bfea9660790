"""Saved faiss indexes: flat equals brute force, approximate kinds keep high recall, save/load round trip."""

import numpy as np
import pytest

pytest.importorskip("faiss")

from deepmetric.errors import ConfigError, DataError, InputError  # noqa: E402
from deepmetric.search_index import SearchIndex, build_index, choose_kind, recall_against_exact  # noqa: E402


def clustered(n=2000, d=16, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((40, d))
    return (centers[rng.integers(0, 40, n)] + 0.3 * rng.standard_normal((n, d))).astype(np.float32)


def test_flat_cosine_matches_brute_force():
    x = clustered()
    q = clustered(20, seed=1)
    index = build_index(x, kind="flat", metric="cosine")
    idx, scores = index.search(q, k=5)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    sims = qn @ xn.T
    for i in range(20):
        ref = np.argsort(-sims[i], kind="stable")[:5]
        np.testing.assert_allclose(np.sort(sims[i, idx[i]])[::-1], sims[i, ref], rtol=1e-5)
        np.testing.assert_allclose(scores[i], sims[i, idx[i]], rtol=1e-5, atol=1e-6)


def test_euclidean_scores_are_squared_distances():
    x = clustered(300)
    index = build_index(x, kind="flat", metric="euclidean")
    idx, scores = index.search(x[:3], k=3)
    assert (idx[:, 0] == np.arange(3)).all()
    d2 = ((x[:3, None] - x[idx]) ** 2).sum(-1)
    np.testing.assert_allclose(scores, d2, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_kinds_have_high_recall(kind):
    x = clustered(3000)
    index = build_index(x, kind=kind, metric="cosine", nlist=32, nprobe=8)
    assert recall_against_exact(index, x, k=10, n_queries=200) > 0.8
    assert recall_against_exact(build_index(x, kind="flat"), x, k=10, n_queries=200) > 0.999


def test_save_load_round_trip_and_errors(tmp_path):
    x = clustered(500)
    labels = list(range(500))
    paths = [f"img{i}.png" for i in range(500)]
    index = build_index(x, kind="hnsw", labels=labels, paths=paths)
    index.save(tmp_path / "g.faiss")
    loaded = SearchIndex.load(tmp_path / "g.faiss")
    assert loaded.kind == "hnsw" and list(loaded.labels) == labels and list(loaded.paths) == paths
    np.testing.assert_array_equal(loaded.search(x[:4], 3)[0], index.search(x[:4], 3)[0])
    with pytest.raises(DataError, match="deepmetric index"):
        SearchIndex.load(tmp_path / "missing.faiss")
    with pytest.raises(DataError, match="must match"):
        build_index(x, labels=[0, 1])
    with pytest.raises(ConfigError, match="unknown index kind"):
        build_index(x, kind="lsh")
    with pytest.raises(InputError, match="NaN"):
        build_index(np.full((3, 2), np.nan))
    with pytest.raises(InputError, match="dims"):
        index.search(np.zeros((1, 3)), 2)
    assert [choose_kind(n) for n in (10, 100_000, 5_000_000, 100_000_000)] == ["flat", "hnsw", "ivf", "ivfpq"]
