"""Training throughput: a full deepmetric training step vs the raw compute of the same network.

*Full step* (``deepmetric.training.fit``): reading and decoding images from a real dataset,
augmentation (the embedder's training transform), the P x K sampler, per-step seeding,
forward, loss, backward, optimizer step, learning-rate schedule, log rows and checkpoints.
To exclude set-up (model and dataset building) and the evaluations ``fit`` always runs (at step
0 and at the end), ``fit`` is run twice in the same process, with ``W`` and with ``W + N`` steps
(same config otherwise), after a throw-away 1-step run that warms caches (weights file, dataset
files); the difference of the two times is the time of N training steps.

*Raw compute*: the same network (built from the same config), the same loss and optimizer, the
same batch size and image size, one batch held in memory (random pixels, real labels layout
P x K): forward + loss + backward + optimizer step, N times after 2 warm-up steps.

The ratio raw / full (images per second) is the cost of data loading and bookkeeping: 1.0 would
mean the training loop adds nothing to the network's own compute. Both are measured in one
process with the same number of threads (``torch.set_num_threads``), data loading in the main
process (``num_workers 0``) unless ``--num-workers`` says otherwise. Wall time and the process's
CPU time are both given (on a shared machine the CPU time is less affected by other jobs; with
worker processes it misses their work, so it is only shown with ``num_workers 0``).

Usage::

    python benchmarks/bench_throughput.py            # olivetti, omniglot, rsscn7; 30 steps
    python benchmarks/bench_throughput.py --quick    # olivetti, 8 steps
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

DATASETS: dict[str, dict[str, Any]] = {
    "olivetti": {"name": "olivetti", "root": "olivetti/olivetti.npz", "params": {"test_fraction": 0.5},
                 "what": "Olivetti faces, 64 px grey arrays in one .npz"},
    "omniglot": {"name": "omniglot", "root": "omniglot-small1/images_background_small1.zip",
                 "params": {"test_fraction": 0.5}, "what": "Omniglot, 105 px PNG read from a zip"},
    "rsscn7": {"name": "folder", "root": "rsscn7", "params": {"test_fraction": 3 / 7},
               "what": "RSSCN7, 256 px JPEG files in class folders",
               "pk": (4, 8)},  # 4 training classes: P = 4, same batch of 32 with the default 8 x 4
}


def make_config(dataset: str, steps: int, p: int, k: int, image_size: int, num_workers: int, seed: int = 0) -> Any:
    """The training config of one measurement (multi-similarity, offline EfficientNet-Lite0)."""
    from deepmetric.config import Config

    d = DATASETS[dataset]
    return Config.model_validate({
        "seed": seed,
        "device": "cpu",
        "data": {"name": d["name"], "root": str(DATA / d["root"]), "params": dict(d["params"]),
                 "val_fraction": 0.0, "image_size": image_size, "num_workers": num_workers},
        "sampler": {"name": "pk", "p": p, "k": k},
        "model": {"backbone": "tf_efficientnet_lite0", "pretrained": "offline", "embedding_dim": 128},
        "loss": {"name": "multi_similarity"},
        "scheduler": {"name": "cosine", "warmup_steps": 2},
        "trainer": {"steps": steps, "eval_every": 0, "checkpoint_every": 10, "log_every": 5},
        "eval": {"split": "test", "baseline": False, "metrics": ["recall@k"], "k_values": [1],
                 "select_metric": "recall@1"},
    })


def time_fit(config: Any) -> tuple[float, float]:
    """(wall s, process CPU s) of ``fit(config)`` in a fresh run folder."""
    from deepmetric.training import fit

    with tempfile.TemporaryDirectory() as tmp:
        w0, c0 = time.perf_counter(), time.process_time()
        fit(config, Path(tmp) / "run", progress=False, report=False)
        return time.perf_counter() - w0, time.process_time() - c0


def time_raw(config: Any, steps: int) -> tuple[float, float]:
    """(wall s, CPU s) of ``steps`` forward + loss + backward + optimizer steps on one in-memory batch."""
    from deepmetric.training.builders import build_loss_from_config, build_model
    from deepmetric.training.optim import build_optimizer
    from deepmetric.training.seed import seed_everything

    seed_everything(config.seed)
    model = build_model(config)
    p, k = config.sampler.p, config.sampler.k
    loss = build_loss_from_config(config.loss, p, model.embedding_dim)
    optimizer = build_optimizer(model, loss, config.optimizer)
    size = config.data.image_size
    x = torch.rand(p * k, config.model.in_chans, size, size)
    y = torch.arange(p).repeat_interleave(k)
    model.train()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss(model(x), y).backward()
        optimizer.step()

    for _ in range(2):
        step()
    w0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    return time.perf_counter() - w0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="olivetti only, 8 steps")
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    ap.add_argument("--steps", type=int, default=30, help="N timed training steps")
    ap.add_argument("--warm", type=int, default=3, help="W steps of the short fit run")
    ap.add_argument("--p", type=int, default=8)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--num-workers", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    if args.quick:
        args.datasets, args.steps = ["olivetti"], 8
    torch.set_num_threads(args.threads)
    if not DATA.is_dir():
        print(f"no data at {DATA}; nothing to run")
        return
    rows = []
    for dataset in args.datasets:
        p, k = DATASETS[dataset].get("pk", (args.p, args.k))
        batch = p * k
        short = make_config(dataset, args.warm, p, k, args.image_size, args.num_workers)
        long = make_config(dataset, args.warm + args.steps, p, k, args.image_size, args.num_workers)
        time_fit(make_config(dataset, 1, p, k, args.image_size, args.num_workers))  # warm caches
        ws, cs = time_fit(short)
        wl, cl = time_fit(long)
        full_w, full_c = max(wl - ws, 1e-9), max(cl - cs, 1e-9)
        raw_w, raw_c = time_raw(long, args.steps)
        n = args.steps * batch
        rows.append((dataset, n / full_w, n / raw_w, full_c, raw_c, n))
    print(f"Setting: multi-similarity, offline EfficientNet-Lite0 -> 128-d, batch P x K = {args.p} x {args.k} = "
          f"{args.p * args.k} (rsscn7, 4 training classes: 4 x 8), {args.image_size} px, AdamW, {args.steps} timed steps (fit with {args.warm + args.steps} "
          f"minus fit with {args.warm} steps), num_workers {args.num_workers}, torch.set_num_threads({args.threads}) "
          f"-> {torch.get_num_threads()} thread(s), torch {torch.__version__}, device cpu.\n")
    cpu = args.num_workers == 0
    head = "| dataset | full step img/s (wall) | raw compute img/s (wall) | raw / full (wall) |"
    sep = "|---|---:|---:|---:|"
    if cpu:
        head += " full img/s (CPU time) | raw img/s (CPU time) | raw / full (CPU time) |"
        sep += "---:|---:|---:|"
    print(head)
    print(sep)
    for dataset, full, raw, full_c, raw_c, n in rows:
        line = f"| {dataset} ({DATASETS[dataset]['what']}) | {full:.1f} | {raw:.1f} | {raw / full:.2f} |"
        if cpu:
            line += f" {n / full_c:.1f} | {n / raw_c:.1f} | {full_c / raw_c:.2f} |"
        print(line)


if __name__ == "__main__":
    main()
