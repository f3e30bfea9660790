"""The margin-softmax, circle and supervised-contrastive losses and cross-batch memory at the
equal-budget protocol of ``bench_accuracy_vs_pml.py``, against multi-similarity.

Same network (offline EfficientNet-Lite0 -> 128-d), same zero-shot splits (Olivetti 20/20 people,
Omniglot half the characters, RSSCN7 4/3 classes), P x K batches (8 x 4; RSSCN7 4 x 8), 64 px,
AdamW 3e-4 constant, 100 steps, the LAST step scored on the unseen test classes (Recall@1, MAP@R;
no checkpoint selection, so no validation split is needed and none is taken from the test
classes). Every loss runs with its documented defaults; the classifier losses (ArcFace, CosFace,
Sub-center ArcFace) own class weights trained at the head's learning rate. XBM keeps the last
1,024 embeddings and starts at step 20. Prints a Markdown table: mean +- sample std over seeds,
and the untrained network.

Usage::

    python benchmarks/evidence_new_losses.py                 # 7 losses x 3 datasets x 3 seeds
    python benchmarks/evidence_new_losses.py --quick         # olivetti, seed 0, 20 steps
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_accuracy_vs_pml import DATA, DATASETS, Budget  # noqa: E402

#: name shown -> loss section of the config
LOSSES: dict[str, dict[str, Any]] = {
    "multi_similarity": {"name": "multi_similarity"},
    "multi_similarity + XBM": {"name": "multi_similarity", "memory_size": 1024, "memory_start_step": 20},
    "arcface": {"name": "arcface"},
    "subcenter_arcface": {"name": "subcenter_arcface"},
    "cosface": {"name": "cosface"},
    "circle": {"name": "circle"},
    "supcon": {"name": "supcon"},
}


def config_for(loss: dict[str, Any], dataset: str, budget: Budget) -> Any:
    from deepmetric.config import Config

    d = DATASETS[dataset]
    return Config.model_validate({
        "seed": budget.seed, "device": "cpu",
        "data": {"name": d["name"], "root": str(DATA / d["root"]), "params": dict(d["params"]),
                 "val_fraction": 0.0, "image_size": budget.image_size, "num_workers": 0},
        "sampler": {"name": "pk", "p": budget.p, "k": budget.k},
        "model": {"backbone": "tf_efficientnet_lite0", "pretrained": "offline", "embedding_dim": 128},
        "loss": dict(loss),
        "optimizer": {"name": "adamw", "lr": budget.lr},
        "scheduler": {"name": "none", "warmup_steps": 0},
        "trainer": {"steps": budget.steps, "eval_every": 0, "checkpoint_every": budget.steps,
                    "log_every": max(1, budget.steps // 5)},
        "eval": {"split": "test", "baseline": True, "checkpoint": "last", "metrics": ["recall@k", "map@r"],
                 "k_values": [1]},
    })


def run(config: Any) -> dict[str, float]:
    from deepmetric.training import fit

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        summary = fit(config, Path(tmp) / "run", progress=False, report=False)
        wall = time.perf_counter() - started
    base = summary["baseline"]["metrics"]
    return {"recall@1": summary["test"]["recall@1"], "map@r": summary["test"]["map@r"],
            "base_r1": base["recall@1"], "base_map": base["map@r"], "wall": wall}


def pm(values: list[float]) -> str:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * mean:.1f} ± {100 * std:.1f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--losses", nargs="+", default=list(LOSSES), choices=list(LOSSES))
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="olivetti, seed 0, 20 steps")
    args = ap.parse_args(argv)
    if args.quick:
        args.datasets, args.seeds, args.steps = ["olivetti"], [0], 20
    torch.set_num_threads(args.threads)
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    started = time.perf_counter()
    for dataset in args.datasets:
        p, k = DATASETS[dataset].get("pk", (8, 4))
        for loss in args.losses:
            for seed in args.seeds:
                budget = Budget(args.steps, p, k, 64, 3e-4, seed)
                row = run(config_for(LOSSES[loss], dataset, budget))
                results.setdefault((dataset, loss), []).append(row)
                print(f"{dataset} {loss} seed {seed}: R@1 {row['recall@1']:.3f} MAP@R {row['map@r']:.3f} "
                      f"({row['wall']:.0f} s)", file=sys.stderr, flush=True)
    print(f"\n{len(args.seeds)} seed(s), {args.steps} steps, 64 px; Recall@1 and MAP@R in % on the unseen test "
          f"classes (mean ± sample std over seeds); total {time.perf_counter() - started:.0f} s\n")
    print("| dataset | loss | Recall@1 | MAP@R | untrained Recall@1 | untrained MAP@R |")
    print("|---|---|---|---|---|---|")
    for (dataset, loss), rows in results.items():
        print(f"| {dataset} | {loss} | {pm([r['recall@1'] for r in rows])} | {pm([r['map@r'] for r in rows])} "
              f"| {pm([r['base_r1'] for r in rows])} | {pm([r['base_map'] for r in rows])} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
