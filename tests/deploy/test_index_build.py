"""Index building from shards (deepmetric.deploy.index_build).

References: an index built from the merged ``.npz`` of the same embeddings (same seed, so the
same training sample and quantizer); brute-force numpy search (``argsort`` of ``q @ x.T``) for
exact neighbours; an explicit loop over every ``nprobe`` / ``efSearch`` for the tuned value."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

faiss = pytest.importorskip("faiss")

from deepmetric.cli import main  # noqa: E402
from deepmetric.deploy.index_build import build_index_from_source, bytes_per_vector, exact_search, fixed_bytes  # noqa: E402
from deepmetric.deploy.sharded_embed import (  # noqa: E402
    EmbedPlan,
    ModelRef,
    check_output,
    embed_shard,
    finalize,
    inputs_sha256,
    write_plan,
)
from deepmetric.shard_store import ShardSet, ShardView, load_shards  # noqa: E402
from deepmetric.embeddings_io import save_embeddings  # noqa: E402
from deepmetric.errors import DeepMetricError  # noqa: E402
from deepmetric.search_index import SearchIndex, build_index, prepare_vectors  # noqa: E402


def clustered(n: int, d: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((60, d))
    return (centers[rng.integers(0, 60, n)] + 1.0 * rng.standard_normal((n, d))).astype(np.float32)


def write_shards(out: Path, x: np.ndarray, world: int = 3) -> tuple[list[str], list[str]]:
    """Shards of the fixed array ``x`` (embed_fn returns its rows) in ``world`` uneven shards."""
    paths = [f"img{i:05d}.png" for i in range(len(x))]
    labels = [f"class{i % 11}" for i in range(len(x))]
    plan = EmbedPlan.create(out, len(x), world, 7, 500, "float32", ModelRef(run="toy", checkpoint="best", sha256="1" * 64),
                            inputs_sha256(paths, labels))
    check_output(plan, resume=False)
    write_plan(plan)
    for rank in range(world):
        embed_shard(plan, rank, lambda s, e: x[s:e], paths, labels)
    finalize(plan)
    return paths, labels


@pytest.fixture(scope="module")
def gallery(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, Path, Path]:
    """(embeddings 3000 x 16, shard folder, merged .npz of the same rows)."""
    root = tmp_path_factory.mktemp("gallery")
    x = clustered(3000)
    paths, labels = write_shards(root / "shards", x)
    merged = load_shards(root / "shards").to_embedding_set()
    assert merged.paths == paths
    npz = save_embeddings(root / "merged.npz", merged.embeddings, merged.labels, merged.paths)
    return x, root / "shards", npz


def brute_force(x: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    xn = prepare_vectors(x, "cosine").astype(np.float64)
    qn = prepare_vectors(q, "cosine").astype(np.float64)
    return np.argsort(-(qn @ xn.T), axis=1, kind="stable")[:, :k]


def test_exact_search_over_blocks_equals_brute_force(gallery: tuple[np.ndarray, Path, Path]) -> None:
    x, shards, _ = gallery
    q = prepare_vectors(clustered(25, seed=5), "cosine")
    ids, scores = exact_search(load_shards(shards), q, 10, "cosine", block_rows=256)  # 12 blocks, 3 shards
    np.testing.assert_array_equal(ids, brute_force(x, q, 10))
    assert (np.diff(scores, axis=1) <= 1e-7).all()


def test_index_from_shards_equals_index_from_merged_file(gallery: tuple[np.ndarray, Path, Path], tmp_path: Path) -> None:
    x, shards, npz = gallery
    a = build_index_from_source(shards, tmp_path / "a.index", kind="ivf", nlist=24, nprobe=4, n_queries=300,
                                block_rows=700)
    b = build_index_from_source(npz, tmp_path / "b.index", kind="ivf", nlist=24, nprobe=4, n_queries=300)
    ia, ib = SearchIndex.load(tmp_path / "a.index"), SearchIndex.load(tmp_path / "b.index")
    quant = lambda i: faiss.vector_to_array(faiss.downcast_index(faiss.extract_index_ivf(i.index).quantizer).codes)  # noqa: E731
    np.testing.assert_array_equal(quant(ia), quant(ib))  # the same trained quantizer
    queries = clustered(200, seed=7)
    (ida, sa), (idb, sb) = ia.search(queries, 10), ib.search(queries, 10)
    np.testing.assert_array_equal(ida, idb)
    np.testing.assert_array_equal(sa, sb)
    assert list(ia.labels) == list(ib.labels) and list(ia.paths) == list(ib.paths)
    assert a.recall == b.recall and 0.5 < a.recall <= 1.0 and a.nprobe == 4 and a.train_sample == 24 * 64
    assert ia.sidecar is not None and ia.sidecar.recall_at_10 == pytest.approx(a.recall) and ia.sidecar.recall_queries == 300
    # the recall it reports is the overlap with brute-force neighbours of the sampled gallery rows
    found, _ = ia.search(x[a.query_rows], 10)
    truth = brute_force(x, x[a.query_rows], 10)
    assert a.recall == pytest.approx(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)]), abs=0.005)


@pytest.mark.parametrize(("kind", "param"), [("ivf", "nprobe"), ("hnsw", "ef_search")])
def test_target_recall_picks_the_smallest_value_reaching_it(gallery: tuple[np.ndarray, Path, Path], tmp_path: Path,
                                                            kind: str, param: str) -> None:
    x, shards, _ = gallery
    target = 0.9
    report = build_index_from_source(shards, tmp_path / "g.index", kind=kind, nlist=40, hnsw_m=8, ef_construction=20,
                                     target_recall=target, n_queries=200)
    index = SearchIndex.load(tmp_path / "g.index")
    chosen = getattr(report, param)
    assert getattr(index.sidecar, param) == chosen and report.target_reached
    truth = brute_force(x, x[report.query_rows], 10)
    raw = index.index

    def recall(value: int) -> float:
        if kind == "ivf":
            faiss.extract_index_ivf(raw).nprobe = value
        else:
            raw.hnsw.efSearch = value
        _, found = raw.search(prepare_vectors(x[report.query_rows], "cosine"), 10)
        return float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)]))

    smallest = next(v for v in range(1, 4097) if recall(v) >= target)  # the explicit loop
    assert chosen == smallest > 1
    assert report.recall == pytest.approx(recall(chosen), abs=0.006)  # ties between equal scores aside


def test_ivfpq_from_shards_and_cli_on_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    x = clustered(10_000, d=16, seed=3)
    write_shards(tmp_path / "shards", x, world=2)
    code = main(["index", str(tmp_path / "shards"), "-o", str(tmp_path / "pq.index"), "--kind", "ivfpq", "--nlist", "32",
                 "--pq-m", "8", "--target-recall", "0.5", "--queries", "200"])
    out = capsys.readouterr().out
    assert code == 0 and "ivfpq index of 10000 items (nlist 32, nprobe" in out and "recall@10" in out
    meta = json.loads((tmp_path / "pq.index.json").read_text())
    assert meta["kind"] == "ivfpq" and meta["pq_m"] == 8 and meta["train_sample"] == 10_000  # min(N, max(64 nlist, 64 x 256))
    index = SearchIndex.load(tmp_path / "pq.index")
    inv = faiss.downcast_InvertedLists(faiss.extract_index_ivf(index.index).invlists)
    assert type(inv).__name__ == "OnDiskInvertedLists"  # opened memory-mapped
    assert isinstance(index.labels, np.memmap)
    # exact search straight over the folder
    save_embeddings(tmp_path / "q.npz", x[:2], ["a", "b"], ["q0", "q1"])
    assert main(["search", str(tmp_path / "shards"), str(tmp_path / "q.npz"), "-k", "3", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert [h["path"] for h in hits[0]["neighbours"]][0] == "img00000.png"
    assert hits[1]["neighbours"][0]["label"] == "class1"


def test_flat_and_hnsw_open_memory_mapped(gallery: tuple[np.ndarray, Path, Path], tmp_path: Path) -> None:
    _, shards, _ = gallery
    build_index_from_source(shards, tmp_path / "f.index", kind="flat", n_queries=50)
    flat = SearchIndex.load(tmp_path / "f.index")
    assert not flat.index.codes.is_owned  # IO_FLAG_MMAP_IFC: the vectors stay in the file
    assert SearchIndex.load(tmp_path / "f.index", mmap=False).index.codes.is_owned
    build_index_from_source(shards, tmp_path / "h.index", kind="hnsw", hnsw_m=8, n_queries=50)
    hnsw = SearchIndex.load(tmp_path / "h.index")
    assert not faiss.downcast_index(hnsw.index.storage).codes.is_owned


def test_bad_rows_name_the_shard_file_and_row(tmp_path: Path) -> None:
    x = clustered(300)
    save_embeddings(tmp_path / "s0.npz", x[:100], ["a"] * 100, [f"p{i}" for i in range(100)])
    bad = x[100:].copy()
    bad[37, 3] = np.inf
    np.savez(tmp_path / "s1.npz", embeddings=bad, labels=np.array(["b"] * 200), paths=np.array(["q"] * 200))
    data = ShardSet(tmp_path, [ShardView(tmp_path / "s0.npz", 0, 100), ShardView(tmp_path / "s1.npz", 100, 300)], 16, "float32")
    for kind in ("flat", "ivf"):  # found while adding, or while drawing the training sample
        with pytest.raises(DeepMetricError, match=r"s1\.npz: row 37 holds NaN or inf"):
            build_index_from_source(data, tmp_path / "x.index", kind=kind, nlist=2)
    assert not list(tmp_path.glob("x.index*")) and not list(tmp_path.glob(".x.index*"))  # nothing half-written


@pytest.mark.parametrize(("kind", "options"), [("flat", {}), ("ivf", {"nlist": 32}), ("ivfpq", {"nlist": 32, "pq_m": 4}),
                                               ("hnsw", {"hnsw_m": 8}), ("hnsw", {"hnsw_m": 32})])
def test_memory_formulas_match_the_index_files(tmp_path: Path, kind: str, options: dict) -> None:
    """docs/scale_out.md's table comes from these formulas; the reference is faiss's own file."""
    n, d = 12_000, 16
    x = np.random.default_rng(0).standard_normal((n, d)).astype(np.float32)
    path = build_index(x, kind=kind, **options).save(tmp_path / "i.index")
    predicted = (bytes_per_vector(kind, d, pq_m=options.get("pq_m", 16), hnsw_m=options.get("hnsw_m", 32)) * n
                 + fixed_bytes(kind, d, options.get("nlist", 0)))
    assert path.stat().st_size == pytest.approx(predicted, rel=0.01)
