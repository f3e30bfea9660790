"""Exact re-ranking of approximate index results from the stored embeddings (``rerank=R``).

References, written here with numpy: brute-force exact search over every gallery row (float64
scores of the float32 vectors the index holds: unit rows for cosine, the rows themselves for
Euclidean), the exact top-k among the index's own ``R x k`` candidates, and an explicit loop
over every ``nprobe`` for the tuned value. The data helpers are the index-build tests'
(``clustered``, ``write_shards``). The gallery is 10,000 x 32: 8-bit PQ codebooks
(256 centroids) train on at least 39 x 256 = 9,984 rows.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

faiss = pytest.importorskip("faiss")

from test_index_build import clustered, write_shards

from deepmetric.cli import main
from deepmetric.deploy.index_build import build_index_from_source
from deepmetric.embeddings_io import save_embeddings
from deepmetric.errors import ConfigError, DataError
from deepmetric.search_index import SearchIndex, prepare_vectors

N, D, K = 10_000, 32, 10
IVFPQ = {"kind": "ivfpq", "nlist": 16, "pq_m": 4}  # 4 bytes per 32-d vector: coarse codes, low recall


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, Path, Path]:
    """(embeddings N x D, the same rows as an .npz, as a folder of 3 shards)."""
    root = tmp_path_factory.mktemp("rerank")
    x = clustered(N, d=D, seed=1)
    save_embeddings(root / "g.npz", x, [f"class{i % 11}" for i in range(N)], [f"img{i:05d}.png" for i in range(N)])
    write_shards(root / "shards", x, world=3)
    return x, root / "g.npz", root / "shards"


def reference_vectors(x: np.ndarray, metric: str) -> np.ndarray:
    """The vectors the index holds, in float64: float32 unit rows (cosine) or the rows (Euclidean)."""
    if metric == "cosine":
        x = (x / np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)).astype(np.float32)
    return x.astype(np.float64)


def exact_scores(x: np.ndarray, q: np.ndarray, metric: str) -> np.ndarray:
    """(Q, N) exact scores: cosine similarity, or squared Euclidean distance."""
    xr, qr = reference_vectors(x, metric), reference_vectors(q, metric)
    if metric == "cosine":
        return qr @ xr.T
    return ((qr[:, None, :] - xr[None, :, :]) ** 2).sum(axis=2)


def top_k(scores: np.ndarray, k: int, metric: str) -> np.ndarray:
    return np.argsort(-scores if metric == "cosine" else scores, axis=1, kind="stable")[:, :k]


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / truth.shape[1] for f, t in zip(found.tolist(), truth.tolist())]))


def one_line_error(code: int, err: str, *needles: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1 and "error:" in lines[0] and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_rerank_of_every_item_equals_brute_force(data: tuple[np.ndarray, Path, Path], tmp_path: Path,
                                                  metric: str) -> None:
    """nprobe = nlist and R k >= N: every item is a candidate, so re-ranking is exact search
    (read from the 3-shard folder: candidates span every shard)."""
    x, _, shards = data
    build_index_from_source(shards, tmp_path / "g.index", metric=metric, nprobe=16, n_queries=50, **IVFPQ)
    index = SearchIndex.load(tmp_path / "g.index")
    q = clustered(20, d=D, seed=5)
    exact = exact_scores(x, q, metric)
    truth = top_k(exact, K, metric)
    ids, scores = index.search(q, K, rerank=N // K)
    np.testing.assert_array_equal(ids, truth)
    np.testing.assert_allclose(scores, np.take_along_axis(exact, truth, axis=1), rtol=1e-6, atol=1e-6)
    approx, approx_scores = index.search(q, K, rerank=0)  # the PQ codes alone are far from it
    assert recall(approx, truth) < 0.9
    assert np.abs(approx_scores - np.take_along_axis(exact, approx, axis=1)).max() > 1e-3


def test_rerank_lifts_ivfpq_recall_and_returns_exact_scores(data: tuple[np.ndarray, Path, Path], tmp_path: Path) -> None:
    x, npz, _ = data
    build_index_from_source(npz, tmp_path / "g.index", nprobe=4, n_queries=50, **IVFPQ)
    index = SearchIndex.load(tmp_path / "g.index")
    q = clustered(300, d=D, seed=9)
    exact = exact_scores(x, q, "cosine")
    truth = top_k(exact, K, "cosine")
    approx, _ = index.search(q, K, rerank=0)
    ids, scores = index.search(q, K, rerank=10)
    before, after = recall(approx, truth), recall(ids, truth)
    print(f"IVF-PQ (nlist 16, nprobe 4, 4-byte codes) recall@{K} on {len(q)} queries: {before:.3f} without "
          f"re-ranking, {after:.3f} re-ranking 10 x {K}")
    assert after > before + 0.2
    np.testing.assert_allclose(scores, np.take_along_axis(exact, ids, axis=1), rtol=1e-6, atol=1e-6)
    # the k best of the index's own R k candidates by exact score
    candidates, _ = index.search(q, 10 * K, rerank=0)
    best = np.argsort(-np.take_along_axis(exact, candidates, axis=1), axis=1, kind="stable")[:, :K]
    np.testing.assert_array_equal(ids, np.take_along_axis(candidates, best, axis=1))


def test_missing_candidates_come_last(data: tuple[np.ndarray, Path, Path], tmp_path: Path) -> None:
    """With nprobe 1 a query sees one list of ~N / nlist items: fewer than R k candidates."""
    _, npz, _ = data
    build_index_from_source(npz, tmp_path / "g.index", nprobe=1, n_queries=50, **{**IVFPQ, "nlist": 64})
    index = SearchIndex.load(tmp_path / "g.index")
    q = clustered(5, d=D, seed=11)
    k = 400  # more than any one list holds
    approx, _ = index.search(q, k, rerank=0)
    ids, scores = index.search(q, k, rerank=3)
    assert (approx == -1).any()
    for row in range(len(q)):
        valid = ids[row][ids[row] >= 0]
        assert set(valid.tolist()) == set(approx[row][approx[row] >= 0].tolist())  # the same items, re-ordered
        assert (ids[row][len(valid):] == -1).all()
        assert (scores[row][len(valid):] == -np.finfo(np.float32).max).all()  # as faiss reports no hit
        assert (np.diff(scores[row][: len(valid)]) <= 0).all()


def test_build_records_rerank_tunes_with_it_and_search_uses_it(data: tuple[np.ndarray, Path, Path], tmp_path: Path) -> None:
    x, npz, _ = data
    target = 0.95
    report = build_index_from_source(npz, tmp_path / "g.index", target_recall=target, n_queries=200, rerank=10,
                                     **{**IVFPQ, "nlist": 64})
    meta = json.loads((tmp_path / "g.index.json").read_text())
    assert meta["rerank"] == 10 and meta["source"] == str(npz.resolve()) and report.rerank == 10
    assert "re-ranking 10 x 10 candidates" in report.summary()
    index = SearchIndex.load(tmp_path / "g.index")
    assert index.rerank == 10 and report.target_reached
    queries = x[report.query_rows]
    truth = top_k(exact_scores(x, queries, "cosine"), K, "cosine")
    raw = index.index

    def reranked_recall(nprobe: int) -> float:
        faiss.extract_index_ivf(raw).nprobe = nprobe
        candidates, _ = index.search(queries, 10 * K, rerank=0)
        exact = np.einsum("qd,qcd->qc", reference_vectors(queries, "cosine"), reference_vectors(x, "cosine")[candidates])
        best = np.argsort(-exact, axis=1, kind="stable")[:, :K]
        return recall(np.take_along_axis(candidates, best, axis=1), truth)

    smallest = next(v for v in range(1, 65) if reranked_recall(v) >= target)  # the explicit loop
    assert report.nprobe == smallest > 1
    assert report.recall == pytest.approx(reranked_recall(smallest), abs=0.006)
    faiss.extract_index_ivf(raw).nprobe = report.nprobe
    q = clustered(50, d=D, seed=13)
    default, with_ten, off = index.search(q, K), index.search(q, K, rerank=10), index.search(q, K, rerank=0)
    np.testing.assert_array_equal(default[0], with_ten[0])
    np.testing.assert_array_equal(default[1], with_ten[1])
    _, i_raw = raw.search(prepare_vectors(q, "cosine"), K)
    np.testing.assert_array_equal(off[0], i_raw)  # rerank=0: the index's own answer
    assert not np.array_equal(off[0], default[0])
    # the build without re-ranking cannot reach the target with 4-byte codes
    plain = build_index_from_source(npz, tmp_path / "p.index", target_recall=target, n_queries=200,
                                    **{**IVFPQ, "nlist": 64})
    assert not plain.target_reached and plain.recall < report.recall and SearchIndex.load(tmp_path / "p.index").rerank == 0


def test_missing_moved_or_replaced_source_is_one_line(data: tuple[np.ndarray, Path, Path], tmp_path: Path) -> None:
    x, npz, _ = data
    source = tmp_path / "g.npz"
    shutil.copy(npz, source)
    build_index_from_source(source, tmp_path / "g.index", nprobe=4, n_queries=50, rerank=5, **IVFPQ)
    q = clustered(3, d=D, seed=2)
    source.rename(tmp_path / "moved.npz")
    index = SearchIndex.load(tmp_path / "g.index")  # loading does not need the source
    with pytest.raises(DataError) as err:
        index.search(q, K)
    message = str(err.value)
    assert "\n" not in message and "missing" in message and "pass --rerank 0" in message and str(source.resolve()) in message
    assert index.search(q, K, rerank=0)[0].shape == (3, K)  # without re-ranking it still searches
    save_embeddings(source, x[:100], ["a"] * 100, [f"p{i}" for i in range(100)])  # other embeddings in its place
    with pytest.raises(DataError, match=r"hold 100 x 32 embeddings and the index 10000 x 32"):
        SearchIndex.load(tmp_path / "g.index").search(q, K)
    np.savez_compressed(source, embeddings=x, labels=np.arange(N))  # the same rows, but not memory-mappable
    with pytest.raises(DataError, match="stored compressed"):
        SearchIndex.load(tmp_path / "g.index").search(q, K)
    source.write_bytes(b"not a zip file")
    with pytest.raises(DataError, match=r"cannot be read .*pass --rerank 0"):
        SearchIndex.load(tmp_path / "g.index").search(q, K)


def test_old_sidecar_without_rerank_loads_and_one_without_source_cannot_rerank(
        data: tuple[np.ndarray, Path, Path], tmp_path: Path) -> None:
    _, npz, _ = data
    build_index_from_source(npz, tmp_path / "g.index", nprobe=4, n_queries=50, **IVFPQ)
    meta_path = tmp_path / "g.index.json"
    meta = json.loads(meta_path.read_text())
    del meta["rerank"]
    meta_path.write_text(json.dumps(meta))
    index = SearchIndex.load(tmp_path / "g.index")
    q = clustered(20, d=D, seed=3)
    assert index.rerank is None and index.sidecar is not None and index.sidecar.rerank is None
    np.testing.assert_array_equal(index.search(q, K)[0], index.search(q, K, rerank=0)[0])  # off by default
    assert index.search(q, K, rerank=10)[0].shape == (20, K)  # still re-ranks on request (the source is recorded)
    del meta["source"]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(DataError, match="records none"):
        SearchIndex.load(tmp_path / "g.index").search(q, K, rerank=10)
    for bad in (-1, 2.5, True):
        with pytest.raises(ConfigError, match="rerank must be a whole number >= 0"):
            index.search(q, K, rerank=bad)  # type: ignore[arg-type]


def test_cli_index_and_search_with_rerank(data: tuple[np.ndarray, Path, Path], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    x, _, stored = data
    shards = shutil.copytree(stored, tmp_path / "shards")  # moved below
    index = str(tmp_path / "g.index")
    code = main(["index", str(shards), "-o", index, "--kind", "ivfpq", "--nlist", "16", "--pq-m", "4", "--nprobe", "4",
                 "--queries", "100", "--rerank", "10"])
    out = capsys.readouterr().out
    assert code == 0 and "(re-ranking 10 x 10 candidates)" in out
    assert json.loads(Path(index + ".json").read_text())["rerank"] == 10
    q = clustered(2, d=D, seed=21)
    save_embeddings(tmp_path / "q.npz", q, ["a", "b"], ["q0", "q1"])
    exact = exact_scores(x, q, "cosine")

    def search(*extra: str) -> list[dict]:
        assert main(["search", index, str(tmp_path / "q.npz"), "-k", "5", "--json", *extra]) == 0
        return json.loads(capsys.readouterr().out)

    for hits in (search(), search("--rerank", "20")):  # the sidecar's R, then an override
        for row, result in enumerate(hits):
            rows = [int(h["path"][3:8]) for h in result["neighbours"]]
            assert [h["score"] for h in result["neighbours"]] == pytest.approx(exact[row, rows], abs=2e-6)
    off = search("--rerank", "0")
    rows = [int(h["path"][3:8]) for h in off[0]["neighbours"]]
    assert max(abs(h["score"] - exact[0, r]) for h, r in zip(off[0]["neighbours"], rows)) > 1e-3  # the PQ estimates
    for command in (["index", str(shards), "-o", str(tmp_path / "x.index")], ["search", index, str(tmp_path / "q.npz")]):
        for bad in ("-1", "2.5", "ten"):
            code = main([*command, "--rerank", bad])
            one_line_error(code, capsys.readouterr().err, "--rerank must be a whole number >= 0", bad)
    code = main(["search", str(tmp_path / "q.npz"), str(tmp_path / "q.npz"), "--rerank", "3"])
    one_line_error(code, capsys.readouterr().err, "--rerank", "searched exactly already")
    shards.rename(tmp_path / "elsewhere")
    code = main(["search", index, str(tmp_path / "q.npz")])
    one_line_error(code, capsys.readouterr().err, "missing", "pass --rerank 0", str(shards.resolve()))
    assert main(["search", index, str(tmp_path / "q.npz"), "--rerank", "0"]) == 0
    assert "img" in capsys.readouterr().out
