"""Evaluation benchmark: deepmetric's one-pass metrics vs pytorch-metric-learning, and 1M scaling.

Part 1 (same embeddings, same run): Precision@1, R-precision and MAP@R of N x 128 embeddings
(default 60,000 with 11,000 classes, leave-one-out, cosine on unit vectors) computed by
``deepmetric.evaluation.evaluate_embeddings`` (exact torch backend) and by
pytorch-metric-learning's ``AccuracyCalculator(k="max_bin_count")`` (faiss flat L2, which ranks
unit vectors exactly as cosine does). Every measurement runs in a FRESH subprocess that reports
its wall time and its own peak resident memory (``ru_maxrss``, i.e. VmHWM), so neither run
inherits the other's memory. The values must agree to 1e-4.

Part 2 (scaling): exact ``knn_search`` of S queries (default 10,000) against a 1,000,000 x 128
gallery with the default settings (on the CPU in float32: 2048 x 2048 score blocks with threshold
pruning, memory ~ one block + the gallery); the time for all 1M queries is extrapolated linearly
(the work per query is constant: one pass over the gallery; a true leave-one-out pass would also
use the score symmetry and take about half of that).

    python benchmarks/bench_eval.py            # full run (several minutes, ~8 GB peak for PML)
    python benchmarks/bench_eval.py --quick    # small sizes, seconds
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

METRIC_KEYS = (("precision@1", "precision_at_1"), ("r_precision", "r_precision"), ("map@r", "mean_average_precision_at_r"))


def make_data(n: int, dim: int, n_classes: int, seed: int = 0, noise: float = 1.6) -> tuple[np.ndarray, np.ndarray]:
    """Unit-norm Gaussian class clusters; every class has >= 1 member, about 1% are singletons."""
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.arange(n_classes), rng.integers(0, n_classes, size=n - n_classes)])
    rng.shuffle(labels)
    centres = rng.standard_normal((n_classes, dim), dtype=np.float32)
    x = centres[labels] + noise * rng.standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), labels.astype(np.int64)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def worker(mode: str, data_dir: Path, args: argparse.Namespace) -> dict:
    import torch

    torch.manual_seed(0)
    out: dict = {"mode": mode, "threads": torch.get_num_threads()}
    if mode == "scale":
        from deepmetric.evaluation import default_chunk_size, knn_search
        from deepmetric.evaluation.blocked_knn import DEFAULT_BLOCK
        from deepmetric.evaluation.knn import _use_blocked

        gen = torch.Generator().manual_seed(1)
        gallery = torch.empty(args.scale_gallery, args.dim)
        for start in range(0, args.scale_gallery, 100_000):  # fill in slices: no big temporaries
            gallery[start : start + 100_000] = torch.randn(min(100_000, args.scale_gallery - start), args.dim, generator=gen)
        queries = torch.randn(args.scale_queries, args.dim, generator=gen)
        out["rss_before_mb"] = _peak_rss_mb()
        t0 = time.perf_counter()
        idx, _ = knn_search(queries, gallery, k=args.scale_k, metric="cosine")
        out["seconds"] = time.perf_counter() - t0
        if _use_blocked(gallery, args.scale_k):
            out["layout"] = f"blocks of {DEFAULT_BLOCK} x {DEFAULT_BLOCK} scores"
        else:
            out["layout"] = f"chunks of {default_chunk_size(args.scale_gallery)} queries"
        out["checksum"] = int(idx[:, 0].sum())
    else:
        x = torch.from_numpy(np.load(data_dir / "x.npy"))
        y = torch.from_numpy(np.load(data_dir / "y.npy"))
        out["rss_before_mb"] = _peak_rss_mb()
        if mode == "ours":
            from deepmetric.evaluation import evaluate_embeddings

            t0 = time.perf_counter()
            res = evaluate_embeddings(x, y, metrics=tuple(k for k, _ in METRIC_KEYS), metric="cosine")
            out["seconds"] = time.perf_counter() - t0
            out["values"] = {k: res[k] for k, _ in METRIC_KEYS}
            out["n_queries_excluded"] = res["n_queries_excluded"]
        else:
            import logging

            from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

            logging.getLogger("PML").setLevel(logging.WARNING)
            calc = AccuracyCalculator(include=tuple(p for _, p in METRIC_KEYS), k="max_bin_count")
            t0 = time.perf_counter()
            res = calc.get_accuracy(x, y)
            out["seconds"] = time.perf_counter() - t0
            out["values"] = {ours: float(res[pml]) for ours, pml in METRIC_KEYS}
    out["peak_rss_mb"] = _peak_rss_mb()
    return out


def run_child(mode: str, data_dir: Path, argv: list[str]) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", mode, "--data-dir", str(data_dir), *argv]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"worker {mode} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes (seconds) to check the script")
    p.add_argument("--n", type=int, default=60_000)
    p.add_argument("--classes", type=int, default=11_000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--scale-gallery", type=int, default=1_000_000)
    p.add_argument("--scale-queries", type=int, default=10_000)
    p.add_argument("--scale-k", type=int, default=16)
    p.add_argument("--skip-pml", action="store_true")
    p.add_argument("--skip-scale", action="store_true")
    p.add_argument("--worker", choices=("ours", "pml", "scale"), help=argparse.SUPPRESS)
    p.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.quick:
        args.n, args.classes = 6_000, 1_100
        args.scale_gallery, args.scale_queries = 100_000, 2_000
    passthrough = [
        f"--dim={args.dim}",
        f"--scale-gallery={args.scale_gallery}",
        f"--scale-queries={args.scale_queries}",
        f"--scale-k={args.scale_k}",
    ]
    if args.worker:
        print(json.dumps(worker(args.worker, args.data_dir, args)))
        return

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        x, y = make_data(args.n, args.dim, args.classes)
        np.save(data_dir / "x.npy", x)
        np.save(data_dir / "y.npy", y)
        sizes = np.bincount(y)
        print(
            f"# Evaluation benchmark: {args.n:,} x {args.dim} unit embeddings, {args.classes:,} classes "
            f"(sizes {sizes.min()}-{sizes.max()}, {(sizes == 1).sum()} singletons), leave-one-out, cosine; "
            f"{os.cpu_count()} CPUs\n"
        )
        rows = [("deepmetric evaluate_embeddings (exact)", run_child("ours", data_dir, passthrough))]
        if not args.skip_pml:
            rows.append(("pytorch-metric-learning AccuracyCalculator", run_child("pml", data_dir, passthrough)))

    print("| implementation | wall time (s) | peak RSS (MB) | RSS before call (MB) | P@1 | R-precision | MAP@R |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in rows:
        v = r["values"]
        print(
            f"| {name} | {r['seconds']:.1f} | {r['peak_rss_mb']:.0f} | {r['rss_before_mb']:.0f} | "
            f"{v['precision@1']:.6f} | {v['r_precision']:.6f} | {v['map@r']:.6f} |"
        )
    print(f"\nqueries excluded from R-based metrics (class has no other member): {rows[0][1]['n_queries_excluded']}")
    if len(rows) == 2:
        ours, pml = rows[0][1], rows[1][1]
        diff = max(abs(ours["values"][k] - pml["values"][k]) for k, _ in METRIC_KEYS)
        print(
            f"speed-up {pml['seconds'] / ours['seconds']:.1f}x, peak memory ratio "
            f"{ours['peak_rss_mb'] / pml['peak_rss_mb']:.2f}, max |difference| {diff:.2e} "
            f"({'agree' if diff <= 1e-4 else 'DISAGREE'} to 1e-4)"
        )

    if not args.skip_scale:
        with tempfile.TemporaryDirectory() as tmp:
            s = run_child("scale", Path(tmp), passthrough)
        full = s["seconds"] * args.scale_gallery / args.scale_queries
        print(
            f"\n## Scaling: exact knn_search, {args.scale_queries:,} queries x {args.scale_gallery:,} gallery x "
            f"{args.dim} dims, k={args.scale_k}, {s['layout']}\n"
        )
        print("| queries | gallery | wall time (s) | peak RSS (MB) | RSS before call (MB) | extrapolated all-vs-all time |")
        print("|---:|---:|---:|---:|---:|---:|")
        print(
            f"| {args.scale_queries:,} | {args.scale_gallery:,} | {s['seconds']:.1f} | {s['peak_rss_mb']:.0f} | "
            f"{s['rss_before_mb']:.0f} | {full:.0f} s ({full / 3600:.1f} h) |"
        )


if __name__ == "__main__":
    main()
