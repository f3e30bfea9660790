"""Does fine-tuning transfer to unseen classes? Every registry loss, with and without the robust
fine-tuning options, against the untrained network, on zero-shot splits.

Protocol (issue 21): offline ImageNet EfficientNet-Lite0 -> 128-d, P x K = 8 x 4 (RSSCN7: 4 x 8),
AdamW at the recipe's learning rate with the default schedule (cosine, warm-up), ``--steps``
optimizer steps at ``--image-size`` px. Zero-shot splits: Olivetti 20 / 20 people, Omniglot half
the characters, RSSCN7 4 / 3 classes, Stanford Cars classes 1-49 / 50-98 (``cars98``, written as
a CSV manifest with a split column). Model selection happens on VALIDATION data only: whole
training classes held out (``data.val_by: classes``; RSSCN7's 4 training classes are too few, so
it falls back to items and the run says so), evaluated every ``steps / 6`` steps with the untrained
network as a candidate; the test classes are scored once, with the chosen weights. Variants:

* ``plain``: the loss with its defaults;
* ``lp``: LP-FT, the backbone frozen for the first 20 % of the steps (``finetune.linear_probe_steps``);
* ``ema``: an exponential moving average of the weights (``finetune.ema_decay`` 0.99);
* ``wise``: WiSE-FT, the interpolation weight chosen on validation from [0, 0.25, 0.5, 0.75, 1];
* ``all``: the three together.

Each finished run is appended to ``--results`` (JSON lines), so the grid can run in pieces and an
interrupted grid resumes where it stopped; the tables are printed from that file. Printed: per
dataset, loss and variant, Recall@1 and MAP@R in % (mean ± sample std over seeds), the change
against the untrained network, whether EVERY seed reached the untrained Recall@1 and beat its
MAP@R, and the wall time per run.

    python benchmarks/evidence_transfer.py                                   # the full grid (many hours)
    python benchmarks/evidence_transfer.py --datasets olivetti --losses multi_similarity osm_caa \\
        --variants plain all --seeds 0 1 2 --steps 100 --image-size 64     # a cut that fits an hour
    python benchmarks/evidence_transfer.py --quick                          # 3 steps: checks that it runs
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"

DATASETS: dict[str, dict[str, Any]] = {
    "olivetti": {"name": "olivetti", "root": "olivetti/olivetti.npz", "params": {"test_fraction": 0.5}},
    "omniglot": {"name": "omniglot", "root": "omniglot-small1/images_background_small1.zip",
                 "params": {"test_fraction": 0.5}},
    "rsscn7": {"name": "folder", "root": "rsscn7", "params": {"test_fraction": 3 / 7}, "pk": (4, 8)},
    "cars98": {"name": "csv", "root": "cars98", "params": {}, "manifest": True},
}

VARIANTS: dict[str, dict[str, Any]] = {
    "plain": {},
    "lp": {"linear_probe_fraction": 0.2},
    "ema": {"ema_decay": 0.99},
    "wise": {"wise_alphas": [0.0, 0.25, 0.5, 0.75, 1.0]},
    "all": {"linear_probe_fraction": 0.2, "ema_decay": 0.99, "wise_alphas": [0.0, 0.25, 0.5, 0.75, 1.0]},
}

#: losses that need two augmented views per item and no labels: not a P x K comparison
SKIP = {"ntxent"}


#: losses whose batches are laid out as triplets [anchors; positives; negatives]
TRIPLET_LAYOUT = {"triplet_hybrid"}


def sampler_for(loss: str, p: int, k: int) -> dict[str, Any]:
    """P x K batches; a triplet-layout loss gets the triplet sampler at about the same batch size."""
    if loss in TRIPLET_LAYOUT:
        return {"name": "triplet", "triplets_per_batch": max(1, p * k // 3)}
    return {"name": "pk", "p": p, "k": k}


def registry_losses() -> list[str]:
    from deepmetric.losses import LOSSES

    return [name for name in LOSSES if name not in SKIP]


def cars_manifest(folder: Path, out: Path) -> Path:
    """A CSV manifest of cars98: classes 1-49 train, 50-98 test (the papers' class order)."""
    classes = sorted(p for p in folder.iterdir() if p.is_dir())
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "split"])
        for index, cls in enumerate(classes, start=1):
            for image in sorted(cls.iterdir()):
                if image.suffix.lower() in (".jpg", ".jpeg", ".png"):
                    writer.writerow([str(image.resolve()), cls.name, "train" if index <= 49 else "test"])
    return out


def data_section(dataset: str, image_size: int, scratch: Path) -> dict[str, Any]:
    d = DATASETS[dataset]
    root = DATA / d["root"]
    if not root.exists():
        raise SystemExit(f"{root} is missing: the data of '{dataset}' must be on disk")
    if d.get("manifest"):
        root = cars_manifest(root, scratch / "cars98.csv")
    return {"name": d["name"], "root": str(root), "params": dict(d["params"]), "val_fraction": 0.2,
            "val_by": "classes", "image_size": image_size, "num_workers": 0}


def config_for(dataset: str, loss: str, variant: str, seed: int, steps: int, image_size: int, lr: float,
               scratch: Path, loss_params: dict[str, Any] | None = None) -> Any:
    from deepmetric.config import Config

    p, k = DATASETS[dataset].get("pk", (8, 4))
    v = VARIANTS[variant]
    finetune: dict[str, Any] = {}
    if "linear_probe_fraction" in v:
        finetune["linear_probe_steps"] = max(1, round(v["linear_probe_fraction"] * steps))
    for key in ("ema_decay", "wise_alphas"):
        if key in v:
            finetune[key] = v[key]
    every = max(1, steps // 6)
    return Config.model_validate({
        "seed": seed, "device": "cpu",
        "data": data_section(dataset, image_size, scratch),
        "sampler": sampler_for(loss, p, k),
        "model": {"backbone": "tf_efficientnet_lite0", "pretrained": "offline", "embedding_dim": 128},
        "loss": {"name": loss, "params": dict(loss_params or {})},
        "optimizer": {"name": "adamw", "lr": lr},
        "scheduler": {"name": "cosine", "warmup_steps": min(20, steps // 10)},
        "trainer": {"steps": steps, "eval_every": every, "checkpoint_every": steps, "log_every": every},
        "eval": {"split": "val", "baseline": True, "checkpoint": "best", "select_metric": "map@r",
                 "metrics": ["recall@k", "map@r"], "k_values": [1]},
        "finetune": finetune,
    })


def run_one(config: Any) -> dict[str, Any]:
    from deepmetric.training import fit

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        summary = fit(config, Path(tmp) / "run", progress=False, report=False)
        wall = time.perf_counter() - started
    base = summary["baseline"]["metrics"]
    return {"recall@1": summary["test"]["recall@1"], "map@r": summary["test"]["map@r"],
            "base_r1": base["recall@1"], "base_map": base["map@r"], "test_step": summary["test_step"],
            "wall": wall, "warnings": summary["warnings"]}


def _key(row: dict[str, Any]) -> tuple[Any, ...]:
    return (row["dataset"], row["loss"], row["variant"], row["seed"], row["steps"], row["image_size"], row["lr"])


def read_results(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def pm(values: list[float]) -> str:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * mean:.1f} ± {100 * std:.1f}"


def table(rows: list[dict[str, Any]]) -> str:
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["loss"], r["variant"]), []).append(r)
    lines = ["| dataset | loss | variant | seeds | Recall@1 | MAP@R | untrained R@1 | untrained MAP@R "
             "| ΔR@1 | ΔMAP@R | every seed ≥ untrained | s / run |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (dataset, loss, variant), rs in sorted(groups.items()):
        d_r1 = [r["recall@1"] - r["base_r1"] for r in rs]
        d_map = [r["map@r"] - r["base_map"] for r in rs]
        ok = all(a >= 0 for a in d_r1) and all(b > 0 for b in d_map)
        lines.append(
            f"| {dataset} | {loss} | {variant} | {len(rs)} | {pm([r['recall@1'] for r in rs])} "
            f"| {pm([r['map@r'] for r in rs])} | {pm([r['base_r1'] for r in rs])} | {pm([r['base_map'] for r in rs])} "
            f"| {100 * statistics.fmean(d_r1):+.1f} | {100 * statistics.fmean(d_map):+.1f} | {'yes' if ok else 'no'} "
            f"| {statistics.fmean(r['wall'] for r in rs):.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    ap.add_argument("--losses", nargs="+", default=None, help="registry names (default: every P x K loss)")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--results", type=Path, default=ROOT / "runs" / "evidence_transfer.jsonl")
    ap.add_argument("--quick", action="store_true", help="olivetti, multi_similarity, plain and all, 3 steps")
    args = ap.parse_args(argv)
    if args.quick:
        args.datasets, args.losses, args.variants, args.seeds = ["olivetti"], ["multi_similarity"], ["plain", "all"], [0]
        args.steps, args.image_size = 6, 32
    losses = args.losses or registry_losses()
    torch.set_num_threads(args.threads)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    done = {_key(r) for r in read_results(args.results)}
    with tempfile.TemporaryDirectory() as scratch:
        for dataset in args.datasets:
            for loss in losses:
                for variant in args.variants:
                    for seed in args.seeds:
                        row = {"dataset": dataset, "loss": loss, "variant": variant, "seed": seed,
                               "steps": args.steps, "image_size": args.image_size, "lr": args.lr}
                        if _key(row) in done:
                            continue
                        config = config_for(dataset, loss, variant, seed, args.steps, args.image_size, args.lr,
                                            Path(scratch))
                        row.update(run_one(config))
                        with args.results.open("a", encoding="utf-8") as handle:
                            handle.write(json.dumps(row) + "\n")
                        print(f"{dataset} {loss} {variant} seed {seed}: R@1 {row['recall@1']:.3f} "
                              f"(untrained {row['base_r1']:.3f}) MAP@R {row['map@r']:.3f} "
                              f"(untrained {row['base_map']:.3f}) step {row['test_step']} {row['wall']:.0f} s",
                              file=sys.stderr, flush=True)
    wanted = {(d, lo, v, s) for d in args.datasets for lo in losses for v in args.variants for s in args.seeds}
    rows = [r for r in read_results(args.results)
            if (r["dataset"], r["loss"], r["variant"], r["seed"]) in wanted
            and (r["steps"], r["image_size"], r["lr"]) == (args.steps, args.image_size, args.lr)]
    print(f"\n{args.steps} steps at {args.image_size} px, lr {args.lr}; test metrics of the weights chosen on "
          "validation classes; Recall@1 and MAP@R in % (mean ± sample std over seeds)\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
