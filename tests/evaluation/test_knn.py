"""knn_search against a brute-force Python reference with an explicit tie rule."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch

from deepmetric.errors import ConfigError, InputError
from deepmetric.evaluation import knn_search
from exact_scores import exact_score_embeddings  # tests/evaluation/exact_scores.py


def _score(a: torch.Tensor, b: torch.Tensor, metric: str) -> float:
    """Cosine similarity or Euclidean distance of two vectors, element by element in float64."""
    a, b = a.double().tolist(), b.double().tolist()
    if metric == "cosine":
        dot = sum(x * y for x, y in zip(a, b))
        na, nb = math.sqrt(sum(x * x for x in a)), math.sqrt(sum(y * y for y in b))
        return dot / (na * nb)
    return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)))


def reference_knn(queries, gallery, k, metric, exclude=None):
    """Sort every candidate by (better score first, lower gallery index first); keep k."""
    out_idx, out_score = [], []
    for i in range(queries.shape[0]):
        cands = []
        for j in range(gallery.shape[0]):
            if exclude is not None and exclude[i] == j:
                continue
            s = _score(queries[i], gallery[j], metric)
            cands.append(((-s if metric == "cosine" else s), j, s))
        cands.sort(key=lambda t: (t[0], t[1]))
        out_idx.append([c[1] for c in cands[:k]])
        out_score.append([c[2] for c in cands[:k]])
    return torch.tensor(out_idx), torch.tensor(out_score, dtype=torch.float64)


def tied_data(n: int, metric: str, seed: int = 0) -> torch.Tensor:
    """Exact-score embeddings (many ties) with exact duplicates of item 2 at 7 and 11."""
    x = exact_score_embeddings(n, metric, torch.Generator().manual_seed(seed))
    x[7] = x[2]
    x[11] = x[2]
    return x


@pytest.fixture(params=["plain", "blocked-32", "blocked-64"])
def search_path(request, monkeypatch):
    """Run a test through the plain chunked path or the blocked, pruned CPU path.

    The blocked path normally starts at 2048-item galleries; here its blocks are made tiny (32
    or 64, so that several blocks, a ragged last block and both candidate routes are used).
    """
    if request.param != "plain":
        from deepmetric.evaluation import blocked_knn, knn

        monkeypatch.setattr(knn, "BLOCKED_MIN_GALLERY", 0)
        monkeypatch.setattr(blocked_knn, "DEFAULT_BLOCK", int(request.param.split("-")[1]))
    return request.param


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("chunk_size", [1, 5, None])
def test_leave_one_out_matches_reference_with_ties(metric, chunk_size, search_path):
    x = tied_data(150, metric)
    idx, score = knn_search(x, k=9, metric=metric, chunk_size=chunk_size)
    ref_idx, ref_score = reference_knn(x, x, 9, metric, exclude=list(range(150)))
    assert torch.equal(idx, ref_idx)
    assert torch.allclose(score.double(), ref_score, atol=1e-6)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_query_gallery_mode_matches_reference_with_ties(metric, search_path):
    x = tied_data(140, metric, seed=1)
    q, g = x[:12], x[12:]
    idx, score = knn_search(q, g, k=7, metric=metric, chunk_size=4)
    ref_idx, ref_score = reference_knn(q, g, 7, metric)
    assert torch.equal(idx, ref_idx)
    assert torch.allclose(score.double(), ref_score, atol=1e-6)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_query_ids_exclude_the_given_gallery_position(metric, search_path):
    x = tied_data(125, metric, seed=2)
    q = x[[3, 7, 20, 100]]
    ids = torch.tensor([3, -1, 20, 100])
    idx, _ = knn_search(q, x, k=6, metric=metric, query_ids=ids)
    ref_idx, _ = reference_knn(q, x, 6, metric, exclude=[3, -1, 20, 100])
    assert torch.equal(idx, ref_idx)
    assert 3 not in idx[0].tolist() and 20 not in idx[2].tolist() and 100 not in idx[3].tolist()


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_all_tied_rows_pick_lowest_indices(metric, search_path):
    x = torch.ones(100, 4)
    idx, score = knn_search(x, k=3, metric=metric)
    for i in range(100):
        assert idx[i].tolist() == [j for j in range(100) if j != i][:3]
    assert torch.all(score == (0 if metric == "euclidean" else 1))


def test_leave_one_out_excludes_by_index_not_value(search_path):
    x = torch.randn(20, 5, generator=torch.Generator().manual_seed(3))
    x[9] = x[4]
    idx, score = knn_search(x, k=1, metric="euclidean")
    assert torch.all(idx[:, 0] != torch.arange(20))
    assert idx[4, 0] == 9 and idx[9, 0] == 4  # the duplicate is still a neighbour
    assert score[4, 0] == 0


def test_self_never_returned_at_largest_k(search_path):
    x = torch.randn(15, 3, generator=torch.Generator().manual_seed(4))
    idx, _ = knn_search(x, k=14, metric="cosine", chunk_size=4)
    for i in range(15):
        assert sorted(idx[i].tolist()) == [j for j in range(15) if j != i]


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("gallery", ["self", "other"])
def test_blocked_path_agrees_with_plain_path_on_continuous_data(metric, gallery, monkeypatch):
    """Float32 Gaussian data over many blocks: the pruned search loses no true neighbour."""
    from deepmetric.evaluation import blocked_knn, knn

    g = torch.Generator().manual_seed(8)
    x = torch.randn(700, 12, generator=g)
    other = None if gallery == "self" else torch.randn(900, 12, generator=g)
    plain = knn_search(x, other, k=12, metric=metric)
    monkeypatch.setattr(knn, "BLOCKED_MIN_GALLERY", 0)
    monkeypatch.setattr(blocked_knn, "DEFAULT_BLOCK", 64)
    blocked = knn_search(x, other, k=12, metric=metric)
    assert torch.equal(blocked.indices, plain.indices)
    assert torch.allclose(blocked.scores, plain.scores, atol=1e-5)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_chunk_size_does_not_change_results(metric):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(70, 16, generator=g)
    results = [knn_search(x, k=10, metric=metric, chunk_size=c) for c in (1, 3, 16, 70, None)]
    for idx, score in results[1:]:
        assert torch.equal(idx, results[0].indices)
        assert torch.allclose(score, results[0].scores, atol=1e-6)


def test_continuous_data_matches_reference_float64():
    g = torch.Generator().manual_seed(6)
    q, x = torch.randn(9, 5, generator=g, dtype=torch.float64), torch.randn(31, 5, generator=g, dtype=torch.float64)
    for metric in ("cosine", "euclidean"):
        idx, score = knn_search(q, x, k=5, metric=metric)
        ref_idx, ref_score = reference_knn(q, x, 5, metric)
        assert torch.equal(idx, ref_idx)
        assert torch.allclose(score, ref_score, atol=1e-10)


def test_numpy_in_numpy_out():
    x = np.random.default_rng(0).normal(size=(12, 4)).astype(np.float32)
    idx, score = knn_search(x, k=2)
    assert isinstance(idx, np.ndarray) and isinstance(score, np.ndarray)
    ref_idx, _ = reference_knn(torch.from_numpy(x), torch.from_numpy(x), 2, "cosine", exclude=list(range(12)))
    assert np.array_equal(idx, ref_idx.numpy())


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_faiss_flat_agrees_with_exact(metric):
    pytest.importorskip("faiss")
    g = torch.Generator().manual_seed(7)
    x = torch.randn(120, 8, generator=g)
    for gallery in (None, torch.randn(50, 8, generator=g)):
        exact = knn_search(x, gallery, k=6, metric=metric)
        approx = knn_search(x, gallery, k=6, metric=metric, backend="faiss", faiss_index="flat")
        assert torch.equal(exact.indices, approx.indices)
        assert torch.allclose(exact.scores, approx.scores, atol=1e-4)


@pytest.mark.parametrize("index", ["ivf", "hnsw"])
def test_faiss_approximate_indexes_find_most_true_neighbours(index):
    pytest.importorskip("faiss")
    g = torch.Generator().manual_seed(8)
    x = torch.randn(400, 8, generator=g)
    exact = knn_search(x, k=5)
    approx = knn_search(x, k=5, backend="faiss", faiss_index=index, nlist=8, nprobe=4)
    assert torch.all(approx.indices != torch.arange(400).unsqueeze(1))  # self excluded
    overlap = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(exact.indices.tolist(), approx.indices.tolist())])
    assert overlap > 0.8


def test_missing_faiss_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(ConfigError, match=r'pip install "deepmetric\[faiss\]"'):
        knn_search(torch.randn(5, 3), k=1, backend="faiss")


def test_bad_input_raises_clear_errors():
    x = torch.randn(6, 3)
    bad = x.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        knn_search(bad, k=1)
    with pytest.raises(InputError, match="lower k"):
        knn_search(x, k=6)  # only 5 others
    with pytest.raises(InputError, match="dims"):
        knn_search(x, torch.randn(4, 2), k=1)
    with pytest.raises(ConfigError, match="cosine"):
        knn_search(x, k=1, metric="cosin")
    with pytest.raises(InputError, match="query_ids"):
        knn_search(x, torch.randn(4, 3), k=1, exclude_self=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    x = tied_data(40, "euclidean")
    cpu = knn_search(x, k=5, metric="euclidean")
    gpu = knn_search(x.cuda(), k=5, metric="euclidean")
    assert gpu.indices.is_cuda
    assert torch.equal(gpu.indices.cpu(), cpu.indices)
