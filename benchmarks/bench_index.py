"""Large-scale search: exact k-NN (torch) vs faiss flat / IVF / HNSW at 100,000 and 1,000,000 x 128.

For every gallery size N: build time, time for Q queries (k = 10), the extrapolated time of a
full leave-one-out pass (N queries), recall@10 against exact search, and peak resident memory
(each configuration runs in a fresh subprocess, so peaks do not mix). Embeddings are random
clustered unit vectors (like a trained embedding: many small classes).

    python benchmarks/bench_index.py [--quick] [--sizes 100000 1000000] [--queries 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np


def make_data(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((max(1, n // 50), dim)).astype(np.float32)
    x = centers[rng.integers(0, len(centers), n)] + 1.0 * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def child(kind: str, n: int, dim: int, n_queries: int, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    x = make_data(n, dim)
    queries = x[np.random.default_rng(1).choice(n, n_queries, replace=False)]
    from deepmetric.evaluation.knn import knn_search

    start = time.perf_counter()
    exact = np.asarray(knn_search(queries, x, 10, metric="cosine", exclude_self=False).indices)
    exact_seconds = time.perf_counter() - start
    if kind == "exact":
        build, seconds, found = 0.0, exact_seconds, exact
    else:
        import faiss

        faiss.omp_set_num_threads(threads)
        from deepmetric.search_index import build_index

        index = build_index(x, kind=kind, metric="cosine")
        build = index.build_seconds
        start = time.perf_counter()
        found, _ = index.search(queries, 10)
        seconds = time.perf_counter() - start
    recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found.tolist(), exact.tolist())]))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"kind": kind, "n": n, "build_s": build, "query_s": seconds, "full_pass_s": seconds * n / n_queries,
            "recall@10": recall, "peak_mb": peak_mb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--kinds", nargs="+", default=["exact", "flat", "ivf", "hnsw"])
    parser.add_argument("--quick", action="store_true", help="20,000 and 100,000 items, 500 queries")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, n, dim, q, t = args.child
        print(json.dumps(child(kind, int(n), int(dim), int(q), int(t))))
        return
    sizes, n_queries = ([20_000, 100_000], 500) if args.quick else (args.sizes, args.queries)
    print(f"# k = 10, {n_queries} queries, dim {args.dim}, {args.threads} threads, cosine; "
          "recall against exact search; peak RSS of a fresh process (includes building the data)\n")
    print("| items | method | build (s) | query time (s) | full N-query pass (s, extrapolated) | recall@10 | peak memory (MB) |")
    print("|---|---|---|---|---|---|---|")
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    for n in sizes:
        for kind in args.kinds:
            out = subprocess.run([sys.executable, __file__, "--child", kind, str(n), str(args.dim), str(n_queries),
                                  str(args.threads)], capture_output=True, text=True, env=env, check=False)
            if out.returncode != 0:
                print(f"| {n:,} | {kind} | failed: {out.stderr.strip().splitlines()[-1] if out.stderr else out.returncode} |")
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            label = {"exact": "exact (torch)", "flat": "faiss flat", "ivf": "faiss IVF", "hnsw": "faiss HNSW"}[kind]
            print(f"| {n:,} | {label} | {r['build_s']:.1f} | {r['query_s']:.2f} | {r['full_pass_s']:.0f} | "
                  f"{r['recall@10']:.3f} | {r['peak_mb']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
