"""Sharded embedding at scale: 200,000 items, 2 processes, killed once (SIGKILL) and resumed.

The items are 16 x 16 RGB images (uint8, seeded, one memory-mapped .npy) and the model a small
seeded CNN (2 strided convolutions + a linear layer -> 64-d, about 50k multiply-adds per image),
so the run measures the machinery (chunks, atomic writes, shard files, manifest, resume) rather
than a large network. Steps, each timed:

1. reference: one process embeds every item into a shard folder;
2. two processes (torchrun, gloo) start on a fresh folder and are killed with SIGKILL once
   ``--kill-after`` chunk files exist;
3. the same command with ``--resume`` finishes the job: it embeds only the chunks that were not
   written (counted per rank);
4. the merged shards are compared with the reference, bit for bit.

Every process uses one thread (bit-identical results need the same thread count), so two
processes use the two cores. Prints a markdown table.

    python benchmarks/bench_shards.py [--items 200000] [--chunk 10000] [--kill-after 6]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent


def make_items(work: Path, n: int, seed: int = 0) -> Path:
    path = work / "items.npy"
    if not path.is_file():
        rng = np.random.default_rng(seed)
        arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, 3, 16, 16))
        for lo in range(0, n, 50_000):
            arr[lo:lo + 50_000] = rng.integers(0, 256, (min(n, lo + 50_000) - lo, 3, 16, 16), dtype=np.uint8)
        arr.flush()
    return path


def build_model():  # noqa: ANN201 - torch imported lazily
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 16, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(16 * 4 * 4, 64),
    ).eval()


def worker(work: Path, out: Path, batch: int, chunk: int, resume: bool) -> None:
    """One rank (rank and world size from torchrun's environment, or 0 of 1)."""
    import torch

    from deepmetric.deploy.sharded_embed import EmbedPlan, ModelRef, inputs_sha256, rank_and_world, run_sharded

    torch.set_num_threads(1)
    rank, world = rank_and_world()
    items = np.load(work / "items.npy", mmap_mode="r")
    n = len(items)
    paths = [f"item{i:07d}" for i in range(n)]
    labels = [i % 1000 for i in range(n)]
    model = build_model()
    sha = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.parameters())).hexdigest()
    plan = EmbedPlan.create(out, n, world, batch, chunk, "float32", ModelRef(run=str(work), checkpoint="bench-cnn", sha256=sha),
                            inputs_sha256(paths, labels))
    embedded = []

    def factory():  # noqa: ANN202
        def embed_range(start: int, stop: int) -> np.ndarray:
            parts = []
            with torch.inference_mode():
                for lo in range(start, stop, batch):
                    x = torch.from_numpy(np.asarray(items[lo:min(stop, lo + batch)])).float().div_(255.0)
                    parts.append(model(x).numpy())
            return np.concatenate(parts)
        return embed_range

    start = time.perf_counter()
    run_sharded(plan, rank, factory, paths, labels, resume=resume, on_chunk=lambda s, e: embedded.append(e - s))
    print(json.dumps({"rank": rank, "chunks": len(embedded), "items": sum(embedded),
                      "seconds": time.perf_counter() - start}), flush=True)


def descendants(pid: int) -> list[int]:
    """Every process started (directly or not) by ``pid``, from /proc (torchrun puts its workers
    in their own sessions, so killing its process group is not enough)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def launch(work: Path, out: Path, nproc: int, args: argparse.Namespace, resume: bool = False,
           kill_after: int | None = None) -> tuple[float, list[dict], bool]:
    """Run the workers; with ``kill_after``, SIGKILL the whole process group once that many
    chunk files exist. Returns (wall seconds, per-rank reports, killed)."""
    command = [sys.executable, __file__, "--worker", str(work), str(out), "--batch", str(args.batch),
               "--chunk", str(args.chunk)] + (["--resume"] if resume else [])
    if nproc > 1:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *command[1:]]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    killed = False
    if kill_after is not None:
        while proc.poll() is None:
            if len(list((out / "parts").glob("items-*.npz"))) >= kill_after:
                for pid in [proc.pid, *descendants(proc.pid)]:  # the launcher and each worker, by id
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                killed = True
                break
            time.sleep(0.05)
    stdout, stderr = proc.communicate()
    seconds = time.perf_counter() - start
    if proc.returncode != 0 and not killed:
        raise SystemExit(f"workers failed ({proc.returncode}):\n{stderr[-3000:]}")
    reports = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    return seconds, reports, killed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=250)
    parser.add_argument("--chunk", type=int, default=10_000)
    parser.add_argument("--kill-after", type=int, default=6, help="chunk files written before the SIGKILL")
    parser.add_argument("--work", default=None, help="working folder (default: a temporary one, removed)")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--resume", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(Path(args.worker[0]), Path(args.worker[1]), args.batch, args.chunk, args.resume)
        return
    from deepmetric.deploy.sharded_embed import load_shards

    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        make_items(work, args.items)
        gen = time.perf_counter() - t0
        ref_s, ref_reports, _ = launch(work, work / "reference", 1, args)
        kill_s, kill_reports, killed = launch(work, work / "two", 2, args, kill_after=args.kill_after)
        parts_at_kill = len(list((work / "two" / "parts").glob("items-*.npz")))
        res_s, res_reports, _ = launch(work, work / "two", 2, args, resume=True)
        ref = load_shards(work / "reference", verify=True)
        two = load_shards(work / "two", verify=True)
        a, b = ref.to_embedding_set(), two.to_embedding_set()
        equal = bool(np.array_equal(a.embeddings, b.embeddings) and a.paths == b.paths
                     and a.labels.tolist() == b.labels.tolist())
        max_diff = float(np.abs(a.embeddings - b.embeddings).max())
        n_chunks = -(-args.items // (-(-args.chunk // args.batch) * args.batch))
        sizes = ", ".join(f"{v.path.name} {v.path.stat().st_size / 2**20:.1f} MiB" for v in two.shards)

    resumed = sorted(res_reports, key=lambda r: r["rank"])
    print(f"# {args.items:,} items (16 x 16 x 3 uint8, generated in {gen:.1f} s), small CNN -> 64-d float32, batch "
          f"{args.batch}, chunks of {args.chunk:,} items ({n_chunks} chunks), 1 thread per process, "
          f"{os.cpu_count()} CPU cores\n")
    print("| step | processes | chunks embedded | items embedded | wall incl. start-up (s) | in the embedding loop (s, slowest rank) |")
    print("|---|---|---|---|---|---|")
    ref_items = sum(r["items"] for r in ref_reports)
    print(f"| reference: one process | 1 | {sum(r['chunks'] for r in ref_reports)} | {ref_items:,} | {ref_s:.1f} | "
          f"{max(r['seconds'] for r in ref_reports):.1f} |")
    print(f"| two processes, SIGKILL once {args.kill_after} chunk files existed | 2 | {parts_at_kill} written | "
          f"{'killed' if killed else 'finished before the kill'} | {kill_s:.1f} | - |")
    res_items = sum(r["items"] for r in resumed)
    print(f"| same command with --resume | 2 | {' + '.join(str(r['chunks']) for r in resumed)} | {res_items:,} | "
          f"{res_s:.1f} | {max(r['seconds'] for r in resumed):.1f} |")
    print(f"\nmerged 2-process shards equal to the reference: {'yes, bit for bit' if equal else 'NO'} "
          f"(max |difference| {max_diff:.3g}); chunks kept from the killed job + embedded on resume: "
          f"{parts_at_kill} + {sum(r['chunks'] for r in resumed)} = {n_chunks}; shards: {sizes}")
    if not equal:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
