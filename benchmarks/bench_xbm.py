"""Cross-batch memory (XBM) cost: time per step and peak memory against the plain loss.

For each base loss and memory size M, one training step (loss forward + backward w.r.t. an
N x D batch that requires a gradient) is timed with a FULL memory of M x D embeddings (labels
drawn from ``--classes`` classes, so every anchor has positives in the memory), against the plain
batch loss. Each configuration runs in its own subprocess, so its peak memory is its own:

* CUDA: ``torch.cuda.max_memory_allocated`` during the steps, minus what was allocated before
  them (the batch and the memory buffer), i.e. the step's working memory;
* CPU: the process's peak resident set (``ru_maxrss``) minus its resident set before the steps
  (same meaning, at page granularity; allocator caching can hide part of a smaller step).

The memory buffer itself (M x D float32) is listed separately. Expected scaling: time and working
memory O(N (N + M)) per step plus the O(N M D) matrix product; the plain loss is O(N^2).

Usage::

    python benchmarks/bench_xbm.py                           # N=128, D=512, M in 8192 65536
    python benchmarks/bench_xbm.py --device cuda --batch 256 --steps 20
    python benchmarks/bench_xbm.py --losses multi_similarity --sizes 8192 --steps 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def _rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _one(args: argparse.Namespace) -> dict[str, float]:
    import torch

    from deepmetric.losses import build_loss
    from deepmetric.losses.xbm import CrossBatchMemory

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    n, d = args.batch, args.dim
    labels = (torch.arange(n) // args.k).to(device)  # P x K batch
    x0 = torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=1).to(device)
    base = build_loss(args.loss)
    loss = base
    if args.memory > 0:
        loss = CrossBatchMemory(base, args.memory, embedding_dim=d).to(device)
        mem = torch.nn.functional.normalize(torch.randn(args.memory, d, generator=g), dim=1).to(device)
        mem_labels = torch.randint(0, args.classes, (args.memory,), generator=g).to(device)
        for start in range(0, args.memory, n):  # fill it through the public ring buffer
            loss.enqueue(mem[start : start + n], mem_labels[start : start + n])
        del mem
        assert int(loss.filled) == args.memory

    def step() -> float:
        x = x0.clone().requires_grad_(True)
        value = loss(x, labels)
        value.backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return float(value)

    step()  # warm-up (allocator, lazy init)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = _rss_bytes()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() - before
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    times.sort()
    return {"median_s": times[len(times) // 2], "min_s": times[0], "peak_bytes": max(peak, 0)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--losses", nargs="+", default=["multi_similarity", "triplet", "contrastive"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[8192, 65536], help="memory sizes M")
    parser.add_argument("--batch", type=int, default=128, help="N (default 128 = 32 classes x 4)")
    parser.add_argument("--k", type=int, default=4, help="samples per class in the batch")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--classes", type=int, default=1000, help="classes of the memory's labels")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per configuration")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--loss", default="multi_similarity", help=argparse.SUPPRESS)
    parser.add_argument("--memory", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(_one(args)))
        return
    rows = []
    common = ["--batch", str(args.batch), "--k", str(args.k), "--dim", str(args.dim), "--classes",
              str(args.classes), "--steps", str(args.steps), "--threads", str(args.threads), "--device", args.device]
    print(f"XBM benchmark: N={args.batch}, D={args.dim}, device={args.device}, threads={args.threads}, "
          f"{args.steps} timed steps (median)", flush=True)
    for loss in args.losses:
        plain = None
        for memory in [0, *args.sizes]:
            out = subprocess.run([sys.executable, __file__, "--one", "--loss", loss, "--memory", str(memory), *common],
                                 capture_output=True, text=True, check=False)
            if out.returncode != 0:
                print(out.stderr, file=sys.stderr)
                raise SystemExit(f"{loss} M={memory} failed")
            result = json.loads(out.stdout.strip().splitlines()[-1])
            plain = plain or result
            rows.append([
                loss, "plain" if memory == 0 else f"{memory:,}",
                f"{result['median_s'] * 1e3:.1f}", f"{result['median_s'] / plain['median_s']:.1f}x",
                f"{result['peak_bytes'] / 2**20:.1f}", f"{memory * args.dim * 4 / 2**20:.0f}" if memory else "-",
            ])
            print("  done:", rows[-1], flush=True)
    header = ["loss", "memory M", "ms/step", "vs plain", "step peak MiB", "buffer MiB"]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths))))


if __name__ == "__main__":
    main()
