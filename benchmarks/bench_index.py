"""Large-scale search: exact k-NN (torch) vs faiss flat / IVF-Flat / IVF-PQ / HNSW at 1,000,000 x 128
(and 10,000,000 x 128 with ``--sizes 10000000``).

The gallery is written once to an uncompressed embeddings ``.npz`` (clustered unit vectors, like
a trained embedding with many small classes; generated block by block, so 10M rows never sit in
memory at once; ``--dtype float16`` halves the file). Each configuration then runs in a fresh
subprocess, so peaks do not mix:

* ``exact``: the whole gallery in memory, :func:`deepmetric.evaluation.knn.knn_search`;
* ``flat``, ``ivf``, ``ivfpq``, ``hnsw``: ``deepmetric index``'s builder
  (:func:`deepmetric.deploy.index_build.build_index_from_source`) streams the file (memory-mapped,
  block by block), trains IVF kinds on a seeded sample, and tunes ``nprobe`` / ``efSearch`` to
  the smallest value with recall@10 >= ``--target-recall`` on 1,000 gallery queries; the index is
  then opened the way ``deepmetric search`` opens it (memory-mapped) and timed on ``--queries``
  *other* gallery items, whose recall@10 against exact search (streamed over the file) is
  reported. ``--rerank R`` builds the faiss kinds with exact re-ranking of ``R x 10`` candidates
  read from the gallery file (tuning and the timed searches both re-rank; the row is labelled
  "+ re-rank xR").

Columns: build (train + add), query time for Q queries and the extrapolated full N-query pass,
recall@10 at the chosen nprobe / efSearch, peak resident memory (ru_maxrss, which counts the
pages of the memory-mapped gallery the process touched) and peak anonymous memory (sampled every
20 ms: what the process itself allocated), and the index's bytes per vector on disk.

    python benchmarks/bench_index.py [--quick] [--sizes 1000000] [--kinds exact flat ivf ivfpq hnsw] [--nlist N]
        [--rerank R]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

LABELS = {"exact": "exact (torch)", "flat": "faiss flat", "ivf": "faiss IVF-Flat", "ivfpq": "faiss IVF-PQ",
          "hnsw": "faiss HNSW"}


def make_data_file(path: Path, n: int, dim: int, dtype: str, seed: int = 0, block: int = 500_000) -> Path:
    """Clustered unit vectors (n // 50 centers, unit noise) written block by block to ``path``."""
    from deepmetric.embeddings_io import NpzStreamWriter

    if path.is_file():
        return path
    centers = np.random.default_rng(seed).standard_normal((max(1, n // 50), dim)).astype(np.float32)

    def blocks():  # noqa: ANN202
        for b, lo in enumerate(range(0, n, block)):
            rng = np.random.default_rng([seed, b])
            m = min(n, lo + block) - lo
            x = centers[rng.integers(0, len(centers), m)] + rng.standard_normal((m, dim)).astype(np.float32)
            yield (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(dtype)

    with NpzStreamWriter(path) as writer:
        writer.write_array("embeddings", dtype, (n, dim), blocks())
        writer.write_array("labels", np.int64, (n,), (np.arange(lo, min(n, lo + block)) // 50 for lo in range(0, n, block)))
    return path


class AnonPeak:
    """Peak of RssAnon (/proc/self/status), sampled every 20 ms in a thread."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _read(self) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
        return 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._read())
            time.sleep(0.02)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return max(self.peak, self._read())


def label(kind: str, rerank: int, pq_m: int | None = None) -> str:
    """The method column: ``faiss IVF-PQ``, or with re-ranking ``faiss IVF-PQ (m=16) + re-rank x10``."""
    if not rerank or kind == "exact":
        return LABELS[kind]
    return LABELS[kind] + (f" (m={pq_m})" if kind == "ivfpq" and pq_m else "") + f" + re-rank x{rerank}"


def child(kind: str, data_path: str, n_queries: int, threads: int, target: float, work: str, nlist: int = 0,
          rerank: int = 0) -> dict:
    import torch

    torch.set_num_threads(threads)
    anon = AnonPeak()
    from deepmetric.deploy.index_build import build_index_from_source, exact_search
    from deepmetric.deploy.sharded_embed import open_embeddings
    from deepmetric.search_index import prepare_vectors

    data = open_embeddings(data_path)
    n = len(data)
    rows = np.sort(np.random.default_rng(12345).choice(n, n_queries, replace=False))  # not the tuning queries
    queries = prepare_vectors(data.take(rows), "cosine")
    out: dict = {"kind": kind, "n": n, "dim": data.dim, "dtype": data.dtype}
    if kind == "exact":
        from deepmetric.evaluation.knn import knn_search

        x = np.asarray(data.shards[0].arrays()["embeddings"], dtype=np.float32)
        start = time.perf_counter()
        knn_search(queries, x, 10, metric="cosine", exclude_self=False)
        out.update(build_s=0.0, tune_s=0.0, query_s=time.perf_counter() - start, recall=1.0, param="-", bytes_per_vector=4 * data.dim)
    else:
        import faiss

        faiss.omp_set_num_threads(threads)
        from deepmetric.search_index import SearchIndex

        index_path = Path(work) / f"{kind}-{n}.index"
        report = build_index_from_source(data, index_path, kind=kind, target_recall=target, n_queries=1000,
                                         nlist=nlist or None, rerank=rerank)
        index = SearchIndex.load(index_path)  # memory-mapped, as `deepmetric search` opens it (re-ranks as built)
        start = time.perf_counter()
        found, _ = index.search(queries, 10)
        query_s = time.perf_counter() - start
        truth, _ = exact_search(data, queries, 10, "cosine")
        recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found.tolist(), truth.tolist())]))
        param = (f"nprobe {report.nprobe} of {report.nlist}" if report.nlist else
                 f"efSearch {report.ef_search}" if report.ef_search else "-")
        out.update(build_s=report.build_seconds, tune_s=report.measure_seconds, query_s=query_s, recall=recall,
                   param=param + ("" if report.target_reached in (None, True) else " (target missed)"),
                   bytes_per_vector=index_path.stat().st_size / n, pq_m=index.sidecar.pq_m if index.sidecar else None)
    out.update(full_pass_s=out["query_s"] * n / n_queries,
               peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, peak_anon_mb=anon.stop() / 2**20)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--dtype", choices=["float32", "float16"], default="float32", help="storage of the gallery file")
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--target-recall", type=float, default=0.95)
    parser.add_argument("--kinds", nargs="+", default=["exact", "flat", "ivf", "ivfpq", "hnsw"])
    parser.add_argument("--work", default=None, help="folder for the gallery files and indexes (default: temporary)")
    parser.add_argument("--quick", action="store_true", help="100,000 items, 500 queries")
    parser.add_argument("--nlist", type=int, default=0, help="IVF lists (0 = deepmetric index's default, 4 sqrt(N))")
    parser.add_argument("--rerank", type=int, default=0, metavar="R",
                        help="faiss kinds: re-rank R x 10 candidates exactly from the gallery file (default: 0, off)")
    parser.add_argument("--child", nargs=8, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, path, q, t, target, work, nlist, rerank = args.child
        print(json.dumps(child(kind, path, int(q), int(t), float(target), work, int(nlist), int(rerank))))
        return
    sizes, n_queries = ([100_000], 500) if args.quick else (args.sizes, args.queries)
    print(f"# k = 10, {n_queries} held-out queries, dim {args.dim}, gallery stored as {args.dtype}, {args.threads} threads, "
          f"cosine; nprobe / efSearch tuned to recall@10 >= {args.target_recall} on 1,000 other gallery queries; "
          "recall against exact search; each row a fresh process\n")
    print("| items | method | build (s) | tune (s) | chosen | query time (s) | full N-query pass (s, extrapolated) "
          "| recall@10 | peak RSS (MB) | peak anon (MB) | index bytes / vector |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    with tempfile.TemporaryDirectory(dir=args.work) as work:
        for n in sizes:
            t0 = time.perf_counter()
            data = make_data_file(Path(work) / f"gallery-{n}-{args.dim}-{args.dtype}.npz", n, args.dim, args.dtype)
            print(f"<!-- gallery of {n:,} x {args.dim} {args.dtype} written in {time.perf_counter() - t0:.0f} s -->", flush=True)
            for kind in args.kinds:
                start = time.perf_counter()
                out = subprocess.run([sys.executable, __file__, "--child", kind, str(data), str(n_queries), str(args.threads),
                                      str(args.target_recall), work, str(args.nlist), str(args.rerank)],
                                     capture_output=True, text=True, env=env, check=False)
                wall = time.perf_counter() - start
                if out.returncode != 0:
                    last = out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"
                    print(f"| {n:,} | {label(kind, args.rerank)} | failed after {wall:.0f} s: "
                          f"{last} |", flush=True)
                    continue
                r = json.loads(out.stdout.strip().splitlines()[-1])
                print(f"| {n:,} | {label(kind, args.rerank, r.get('pq_m'))} | {r['build_s']:.1f} | {r['tune_s']:.1f} | {r['param']} | {r['query_s']:.2f} | "
                      f"{r['full_pass_s']:.0f} | {r['recall']:.3f} | {r['peak_rss_mb']:.0f} | {r['peak_anon_mb']:.0f} | "
                      f"{r['bytes_per_vector']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
