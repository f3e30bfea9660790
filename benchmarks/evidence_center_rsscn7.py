"""Evidence for center-based structured metric learning (Gong et al., Remote Sensing 11(1):76,
2019; METHODS.md section 4, a reconstruction) on RSSCN7 aerial scenes (7 classes x 400 images).

Ablation of :class:`deepmetric.losses.center_structured.CenterStructuredLoss`, same backbone,
batches, budget and splits for every variant:

* CE alone               (``use_structured=False, use_center=False``)
* CE + structured        (``use_center=False``: lifted structure over batch features U centers)
* CE + centers           (``use_structured=False``: center pull + center push)
* full                   (CE + structured + centers)

Protocol: ``deepmetric train``'s run protocol (:func:`deepmetric.training.protocols.run_protocol`)
with ``protocol.name: repeated_splits`` and ``eval.protocol: classification``: a random per-class
train/test split (test fraction 0.2) repeated over split seeds 0..S-1 (the run seed too), the same
seeds for every variant; validation carved from the training items (10 %); test accuracy of the
softmax head, of the nearest learned center and of 1-NN over the training images, from the final
weights (``--checkpoint last``, the default: a fixed budget, nothing chosen; ``--checkpoint best``
takes the checkpoint with the best validation accuracy among steps 0, S/2 and S), mean +- sample
std over the splits (``summary.json``). Also reported: test 1-NN (recall@1, leave-one-out within
the test split) of the untrained pretrained features vs the trained embeddings.

To fit a shared 2-core CPU the budget is small (see ``--help`` for every knob; the defaults are
what docs/results.md reports): EfficientNet-Lite0 with the offline ImageNet weights at 64 px,
``max_per_class`` 100 images of each class (80 train / 20 test per class), 7 classes x 6 images
per batch, 100 AdamW steps (lr 1e-3 head, 1e-4 backbone, 1e-2 classifier and centers), warm-up
10, cosine, BatchNorm statistics frozen, one intra-op thread per process.

    python benchmarks/evidence_center_rsscn7.py                        # the reported table
    python benchmarks/evidence_center_rsscn7.py --quick                # tiny budget: checks it runs
    python benchmarks/evidence_center_rsscn7.py --variants ce,full     # a subset (e.g. one process each)

Finished splits in ``--out`` are reused (``resume``), so several processes may each run some
variants and a last call without ``--variants`` prints the whole table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
RECIPE = REPO / "recipes" / "center_rsscn7.yaml"

#: variant key -> (table label, loss.params overrides on top of the recipe's)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "ce": ("CE alone", {"use_structured": False, "use_center": False}),
    "ce_structured": ("CE + structured", {"use_center": False}),
    "ce_centers": ("CE + centers", {"use_structured": False}),
    "full": ("full (CE + structured + centers)", {}),
}


def overrides(args: argparse.Namespace) -> list[str]:
    """Config overrides of the recipe for this budget."""
    return [
        "device=cpu" if args.cpu else "device=auto",
        "data.name=scene_folder",
        f"data.root={args.data}",
        f"data.params={{max_per_class: {args.max_per_class}}}",
        "data.num_workers=0",
        "data.val_fraction=0.1",
        f"data.image_size={args.image_size}",
        "sampler.p=7",
        f"sampler.k={args.k}",
        f"optimizer.lr={args.lr}",
        "optimizer.backbone_lr_mult=0.1",
        "optimizer.loss_lr_mult=10",
        f"scheduler.warmup_steps={max(1, args.steps // 10)}",
        f"trainer.steps={args.steps}",
        f"trainer.eval_every={max(1, args.steps // 2)}",
        f"trainer.checkpoint_every={max(1, args.steps // 2)}",
        "trainer.early_stopping_patience=null",
        "eval.protocol=classification",
        f"eval.checkpoint={args.checkpoint}",
        "eval.batch_size=64",
        "eval.metrics=[recall@k]",
        "eval.k_values=[1]",
        "eval.select_metric=accuracy",
        "protocol.name=repeated_splits",
        f"protocol.repeats={args.splits}",
        "protocol.test_fraction=0.2",
    ]


def variant_config(args: argparse.Namespace, key: str) -> Any:
    from deepmetric.config import load_config

    config = load_config(RECIPE, overrides(args))
    params = {**config.loss.params, **VARIANTS[key][1]}
    return config.model_copy(update={"loss": config.loss.model_copy(update={"params": params})})


def _pct(entry: dict[str, Any] | None) -> str:
    if not entry or entry.get("mean") is None:
        return "-"
    return f"{100 * entry['mean']:.2f} +- {100 * entry['std']:.2f}"


def _mean_std(values: list[float]) -> dict[str, float]:
    import numpy as np

    arr = np.asarray(values, dtype=float)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if arr.size > 1 else 0.0}


def variant_row(key: str, out: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """The table row of one variant from its ``summary.json`` and its splits' ``metrics.json``."""
    from deepmetric.run_files import read_metrics

    stats = summary["groups"]["all"]
    baseline = []
    for run in summary["runs"]:
        metrics = read_metrics(out / run["run_dir"])
        if metrics.baseline is not None and metrics.baseline.metrics.get("recall@1") is not None:
            baseline.append(float(metrics.baseline.metrics["recall@1"]))
    return {
        "variant": key,
        "label": VARIANTS[key][0],
        "softmax": stats.get("accuracy/softmax"),
        "nearest_center": stats.get("accuracy/nearest_center"),
        "knn": stats.get("accuracy/knn"),
        "knn_untrained": _mean_std(baseline) if baseline else None,
        "knn_trained": stats.get("recall@1"),
        "per_split_softmax": (stats.get("accuracy/softmax") or {}).get("values"),
        "checkpoint_steps": [run["test_step"] for run in summary["runs"]],
        "split_seeds": [run["params"]["seed"] for run in summary["runs"]],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(SHARED_DATA / "rsscn7"), help="RSSCN7 folder (one sub-folder per class)")
    parser.add_argument("--out", default=str(REPO / "runs" / "evidence_center_rsscn7"), help="experiment folder")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {list(VARIANTS)}")
    parser.add_argument("--splits", type=int, default=3, help="random splits per variant")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--max-per-class", type=int, default=100, help="images kept per class before splitting")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--k", type=int, default=6, help="images per class in a batch (7 classes per batch)")
    parser.add_argument("--lr", type=float, default=1e-3, help="head learning rate (backbone x0.1, loss x10)")
    parser.add_argument("--checkpoint", choices=("best", "last"), default="last",
                        help="predict with the final weights (default: a fixed budget, nothing chosen) or the "
                        "checkpoint chosen on validation accuracy of the softmax head (steps 0, S/2, S)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--cpu", action="store_true", help="train on the CPU even if a GPU is present")
    parser.add_argument("--quick", action="store_true", help="tiny budget (32 px, 20 images per class, 4 steps, 2 splits)")
    args = parser.parse_args(argv)
    if args.quick:
        args.image_size, args.max_per_class, args.steps, args.k, args.splits = 32, 20, 4, 2, 2
        if args.out == parser.get_default("out"):
            args.out = str(REPO / "runs" / "evidence_center_rsscn7_quick")
    data = Path(args.data)
    if not data.is_dir():
        print(f"RSSCN7 not found at {data}; pass --data PATH", file=sys.stderr)
        return 2
    keys = [k.strip() for k in args.variants.split(",") if k.strip()]
    unknown = [k for k in keys if k not in VARIANTS]
    if unknown:
        print(f"unknown variants {unknown}; choose from {list(VARIANTS)}", file=sys.stderr)
        return 2

    import torch

    torch.set_num_threads(args.threads)
    from deepmetric.training.protocols import run_protocol

    out = Path(args.out)
    rows = []
    for key in keys:
        folder = out / key
        resume = (folder / "config.yaml").is_file()
        summary = run_protocol(variant_config(args, key), folder, resume=resume, progress=False, report=False)
        rows.append(variant_row(key, folder, summary))
        print(f"{key}: done", flush=True)
    header = ("| loss | softmax head acc. (%) | nearest center acc. (%) | 1-NN of training images acc. (%) "
              "| test 1-NN untrained -> trained (%) | predicted at step |\n|---|---|---|---|---|---|")
    lines = [header]
    for r in rows:
        lines.append(
            f"| {r['label']} | {_pct(r['softmax'])} | {_pct(r['nearest_center'])} | {_pct(r['knn'])} | "
            f"{_pct(r['knn_untrained'])} -> {_pct(r['knn_trained'])} | {r['checkpoint_steps']} |"
        )
    table = "\n".join(lines)
    print(table)
    settings = {k: v for k, v in vars(args).items()}
    (out / "evidence.json").write_text(json.dumps({"settings": settings, "rows": rows}, indent=2), encoding="utf-8")
    (out / "evidence.md").write_text(table + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
