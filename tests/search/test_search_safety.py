"""Hostile or damaged inputs to search: the sidecar schema (one line per malformed field),
overflow-safe cosine normalisation (1e20 x gives the neighbours and similarities of x), NaN/inf
rows named, and control characters in printed paths and labels shown as escapes, never raw.

References: the same search on the unscaled embeddings; ``json.loads`` for the lossless JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

faiss = pytest.importorskip("faiss")

from deepmetric.cli import main  # noqa: E402
from deepmetric.deploy.index_build import build_index_from_source  # noqa: E402
from deepmetric.embeddings_io import load_embeddings, save_embeddings  # noqa: E402
from deepmetric.errors import DataError, InputError  # noqa: E402
from deepmetric.search_index import SearchIndex, build_index, prepare_vectors, safe_text  # noqa: E402

RAW_CONTROL = ("\x1b", "\x07", "\u202e", "\x9b")


def clustered(n: int = 600, d: int = 8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((12, d))
    return (centers[rng.integers(0, 12, n)] + 0.5 * rng.standard_normal((n, d))).astype(np.float32)


def run_main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 1, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert not any(c in err for c in RAW_CONTROL), repr(err)
    for needle in needles:
        assert needle in err, err


# ---------------------------------------------------------------------------------------------
# the sidecar


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, Path, dict[str, Any]]:
    """(an IVF index, a queries .npz, its sidecar as a dict)."""
    x = clustered()
    save_embeddings(tmp_path / "g.npz", x, [f"c{i % 5}" for i in range(len(x))], [f"p{i}" for i in range(len(x))])
    save_embeddings(tmp_path / "q.npz", x[:2], ["c0", "c1"], ["q0", "q1"])
    build_index_from_source(tmp_path / "g.npz", tmp_path / "g.index", kind="ivf", nlist=8, nprobe=2, n_queries=50)
    return tmp_path / "g.index", tmp_path / "q.npz", json.loads((tmp_path / "g.index.json").read_text())


BAD_FIELDS = [
    ({"metric": "manhattan"}, "metric"),
    ({"metric": 1}, "metric"),
    ({"kind": "lsh"}, "kind"),
    ({"dim": 0}, "dim"),
    ({"dim": "8"}, "dim"),
    ({"count": -1}, "count"),
    ({"count": 3.5}, "count"),
    ({"nlist": 0}, "nlist"),
    ({"nprobe": 0}, "nprobe"),
    ({"nprobe": 9}, "nprobe"),  # > nlist
    ({"ef_search": 16}, "ef_search"),  # not an hnsw index
    ({"labels_file": "../../etc/passwd.npy"}, "labels_file"),
    ({"labels_file": "/tmp/x.npy"}, "labels_file"),
    ({"paths_file": "a\x1b[31m.npy"}, "paths_file"),
    ({"recall_at_10": 1.5}, "recall_at_10"),
    ({"format": 2}, "format"),
    ({"evil\x1b[31m": 1}, "unknown key 'evil\\x1b[31m'"),
    ({"kind": None}, "kind"),
]


@pytest.mark.parametrize(("change", "needle"), BAD_FIELDS, ids=[next(iter(c)) + "=" + repr(next(iter(c.values())))
                                                              for c, _ in BAD_FIELDS])
def test_sidecar_schema_rejects_each_malformed_field(saved: tuple[Path, Path, dict[str, Any]], change: dict[str, Any],
                                                     needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    index, queries, meta = saved
    index.with_name(index.name + ".json").write_text(json.dumps({**meta, **change}))
    code, _, err = run_main(["search", str(index), str(queries)], capsys)
    assert_one_line_error(code, err, "does not match the schema", needle, "deepmetric index")


@pytest.mark.parametrize(
    ("change", "needle"),
    [({"count": 5}, "holds 600 items"), ({"metric": "euclidean"}, "metric 'euclidean'"),
     ({"kind": "flat", "nlist": None, "nprobe": None}, "kind 'flat'"), ({"nlist": 7, "nprobe": 2}, "nlist 7"),
     ({"labels_file": "missing.npy"}, "missing")],
)
def test_sidecar_that_disagrees_with_the_index(saved: tuple[Path, Path, dict[str, Any]], change: dict[str, Any],
                                               needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    index, queries, meta = saved
    index.with_name(index.name + ".json").write_text(json.dumps({**meta, **change}))
    code, _, err = run_main(["search", str(index), str(queries)], capsys)
    assert_one_line_error(code, err, needle)


@pytest.mark.parametrize(
    ("content", "needle"),
    [(b"{not json", "not valid JSON"), (b"[1, 2]", "JSON object"), (b"\xff\xfe{}", "not UTF-8"),
     (b"[" * 200_000, "nested too deeply"), (b"", "not valid JSON")],
)
def test_damaged_sidecar_file(saved: tuple[Path, Path, dict[str, Any]], content: bytes, needle: str,
                              capsys: pytest.CaptureFixture[str]) -> None:
    index, queries, _ = saved
    index.with_name(index.name + ".json").write_bytes(content)
    code, _, err = run_main(["search", str(index), str(queries)], capsys)
    assert_one_line_error(code, err, needle)


def test_damaged_index_file_and_legacy_sidecar(saved: tuple[Path, Path, dict[str, Any]], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    index, queries, _ = saved
    index.write_bytes(b"\x00" * 100)
    code, _, err = run_main(["search", str(index), str(queries)], capsys)
    assert_one_line_error(code, err, "cannot be read by faiss")
    # an index written before the sidecar had a schema version (labels and paths inline) still loads
    legacy = tmp_path / "old.index"
    x = clustered(20)
    flat = faiss.IndexFlatIP(8)
    flat.add(prepare_vectors(x, "cosine"))
    faiss.write_index(flat, str(legacy))
    legacy.with_name("old.index.json").write_text(json.dumps(
        {"kind": "flat", "metric": "cosine", "labels": list(range(20)), "paths": [f"p{i}" for i in range(20)], "size": 20, "dim": 8}))
    loaded = SearchIndex.load(legacy)
    assert loaded.hits(x[:1], 1)[0][0].path == "p0"


# ---------------------------------------------------------------------------------------------
# overflow-safe normalisation


def test_embeddings_scaled_by_1e20_give_the_same_neighbours_and_similarity(tmp_path: Path,
                                                                           capsys: pytest.CaptureFixture[str]) -> None:
    x, q = clustered(), clustered(5, seed=9)
    big = (x.astype(np.float64) * 1e20).astype(np.float32)
    with np.errstate(over="ignore"):
        assert np.isfinite(big).all() and not np.isfinite(np.linalg.norm(big, axis=1)).all()  # naive float32 norms overflow
    for kind in ("flat", "ivf", "hnsw"):
        ref_i, ref_s = build_index(x, kind=kind, nlist=8, nprobe=8).search(q, 5)
        got_i, got_s = build_index(big, kind=kind, nlist=8, nprobe=8).search(q * np.float32(1e20), 5)
        np.testing.assert_array_equal(got_i, ref_i)
        np.testing.assert_allclose(got_s, ref_s, atol=1e-6)
    np.testing.assert_allclose(prepare_vectors(x.astype(np.float64) * 1e300, "cosine"), prepare_vectors(x, "cosine"), atol=1e-7)
    # the commands: an .npz gallery, an index built from it, and the same for the unscaled rows
    labels, paths = [f"c{i % 5}" for i in range(len(x))], [f"p{i}" for i in range(len(x))]
    save_embeddings(tmp_path / "big.npz", big, labels, paths)
    save_embeddings(tmp_path / "small.npz", x, labels, paths)
    save_embeddings(tmp_path / "qbig.npz", q * np.float32(1e20), ["a"] * 5, [f"q{i}" for i in range(5)])
    save_embeddings(tmp_path / "q.npz", q, ["a"] * 5, [f"q{i}" for i in range(5)])
    results = []
    for gallery, query in (("small.npz", "q.npz"), ("big.npz", "qbig.npz")):
        assert main(["index", str(tmp_path / gallery), "-o", str(tmp_path / f"{gallery}.index"), "--kind", "flat"]) == 0
        capsys.readouterr()
        for source in (gallery, f"{gallery}.index"):
            code, out, _ = run_main(["search", str(tmp_path / source), str(tmp_path / query), "-k", "5", "--json"], capsys)
            assert code == 0
            results.append(json.loads(out))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert [h["path"] for h in a["neighbours"]] == [h["path"] for h in b["neighbours"]]
            np.testing.assert_allclose([h["score"] for h in a["neighbours"]], [h["score"] for h in b["neighbours"]], atol=2e-6)


def test_nan_inf_and_euclidean_overflow_are_one_line_errors_naming_file_and_row(tmp_path: Path,
                                                                                capsys: pytest.CaptureFixture[str]) -> None:
    x = clustered(50)
    x[17, 2] = np.nan
    np.savez(tmp_path / "nan.npz", embeddings=x, labels=np.arange(50), paths=np.array([f"p{i}" for i in range(50)]))
    code, _, err = run_main(["index", str(tmp_path / "nan.npz"), "-o", str(tmp_path / "n.index")], capsys)
    assert_one_line_error(code, err, "nan.npz", "row 17")
    with pytest.raises(DataError, match=r"nan\.npz.*row 17 holds NaN"):
        load_embeddings(tmp_path / "nan.npz")
    x[17, 2] = np.inf
    np.savez(tmp_path / "inf.npz", embeddings=x, labels=np.arange(50))
    code, _, err = run_main(["search", str(tmp_path / "inf.npz"), str(tmp_path / "inf.npz")], capsys)
    assert_one_line_error(code, err, "inf.npz", "row 17")
    with pytest.raises(InputError, match="overflow float32"):
        build_index(clustered(50) * np.float32(1e20), kind="flat", metric="euclidean")


# ---------------------------------------------------------------------------------------------
# printed paths and labels


def test_safe_text_escapes_control_characters_visibly() -> None:
    assert safe_text("\x1b[31mred\x1b[0m") == "\\x1b[31mred\\x1b[0m"
    assert safe_text("a\nb\tc\x07\x7f\x9b") == "a\\nb\\tc\\x07\\x7f\\x9b"
    assert safe_text("\u202eevil\u2028") == "\\u202eevil\\u2028"
    assert safe_text("café/猫.png") == "café/猫.png"
    assert safe_text("x" * 50, limit=10) == "xxxxxxx..."


def test_search_output_carries_no_terminal_escape_sequences(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    x = clustered(6)
    labels = ["\x1b[31mred", "plain", "bell\x07", "\u202eflipped", "b", "c"]
    paths = ["evil\x1b]0;pwned\x07.png", "p1\nfake row", "p2", "p3", "p4", "p5\x9b2J"]
    save_embeddings(tmp_path / "g.npz", x, labels, paths)
    save_embeddings(tmp_path / "q\x1b[2J.npz", x[:1], ["\x1b[1mq"], ["query\x1b[5m.png"])
    assert main(["index", str(tmp_path / "g.npz"), "-o", str(tmp_path / "g.index"), "--kind", "flat"]) == 0
    capsys.readouterr()
    for gallery in ("g.npz", "g.index"):
        code, out, _ = run_main(["search", str(tmp_path / gallery), str(tmp_path / "q\x1b[2J.npz"), "-k", "6"], capsys)
        assert code == 0
        assert not any(c in out for c in RAW_CONTROL), repr(out)
        assert "\\x1b[31mred" in out and "evil\\x1b]0;pwned\\x07.png" in out and "query\\x1b[5m.png" in out
        assert "p1\\nfake row" in out and "\\u202eflipped" in out and "p5\\x9b2J" in out
        assert len(out.strip().splitlines()) == 2 + 6  # header, rule, one line per hit: no injected rows
        code, out, _ = run_main(["search", str(tmp_path / gallery), str(tmp_path / "q\x1b[2J.npz"), "-k", "6", "--json"], capsys)
        assert code == 0 and not any(c in out for c in RAW_CONTROL), repr(out)
        hits = json.loads(out)[0]["neighbours"]  # the JSON is lossless: the exact label comes back
        assert {h["label"] for h in hits} == set(labels) and {h["path"] for h in hits} == set(paths)
        assert json.loads(out)[0]["query"] == "query\x1b[5m.png"
