"""Evidence for DeMAL-CNN on PH2: an ablation under stratified 5-fold cross-validation.

Method: He, Wang, Zhao, Yao, "Deep metric attention learning for skin lesion classification in
dermoscopy images", Complex & Intelligent Systems, 2022 (METHODS.md section 5, a reconstruction).

Four variants, same backbone (offline ImageNet EfficientNet-Lite0), image size, batch size (24
images), optimiser and step budget, each run by ``deepmetric train``'s run protocol
(:func:`deepmetric.training.protocols.run_protocol`) from ``recipes/demal_ph2_cv.yaml``
(``protocol.name: kfold``, ``eval.protocol: diagnostic``) plus overrides:

* ``cnn_ce``       -- CNN, cross-entropy only (normalised-softmax classifier) on P x K batches
                      (3 classes x 8 images);
* ``attention_ce`` -- + mixed attention after the last two stages, same loss and batches;
* ``triplet``      -- CNN (no attention), triplet batches (8 triplets), triplet + CE hybrid loss;
* ``demal``        -- full DeMAL-CNN: attention + triplet batches + triplet + CE hybrid loss.

Prints (and with ``--markdown FILE`` writes) a table of accuracy, balanced accuracy and melanoma
sensitivity / specificity / AUC / AP in %, mean +- sample std over the folds (each variant's
``summary.json``). Predictions come from the final weights (``eval.checkpoint=last``): the inner
validation split (32 images) monitors training. Every process runs with one thread (the
development machine is shared). Finished folds in ``--out`` are reused (``resume``).

    python benchmarks/evidence_demal_ph2.py [--steps 30] [--image-size 96] [--folds 5] [--quick]

``--quick`` checks the pipeline in about a minute (2 folds, 2 steps, 64 px).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from deepmetric.config import load_config  # noqa: E402
from deepmetric.training.protocols import run_protocol  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "ph2"
RECIPE = ROOT / "recipes" / "demal_ph2_cv.yaml"

PK = ["sampler.name=pk", "sampler.p=3", "sampler.k=8", "loss.name=normalized_softmax", "loss.params={}"]
TRIPLET = ["sampler.name=triplet", "sampler.triplets_per_batch=8", "loss.name=triplet_hybrid"]
VARIANTS = {
    "cnn_ce": ["model.params.use_attention=false", *PK],
    "attention_ce": ["model.params.use_attention=true", *PK],
    "triplet": ["model.params.use_attention=false", *TRIPLET],
    "demal": ["model.params.use_attention=true", *TRIPLET],
}
#: (metric of summary.json, title) of the table
SUMMARY_KEYS = (
    ("accuracy", "accuracy"),
    ("balanced_accuracy", "balanced accuracy"),
    ("sensitivity", "melanoma sensitivity"),
    ("specificity", "melanoma specificity"),
    ("auc", "melanoma AUC"),
    ("average_precision", "melanoma AP"),
)
LABELS = {
    "cnn_ce": "CNN + CE",
    "attention_ce": "+ attention (CE)",
    "triplet": "+ triplet (no attention)",
    "demal": "DeMAL-CNN (attention + triplet + CE)",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps per fold")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--out", default=str(ROOT / "runs" / "evidence_demal_ph2"))
    parser.add_argument("--markdown", default=None, help="also write the table to this file")
    parser.add_argument("--quick", action="store_true", help="2 folds, 2 steps, 64 px: checks the pipeline")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if not (DATA / "labels.csv").is_file():
        print(f"PH2 not found at {DATA}; this benchmark needs ../shared/data/ph2")
        return 1
    steps, size, folds = (2, 64, 2) if args.quick else (args.steps, args.image_size, args.folds)
    out = Path(args.out) / ("quick" if args.quick else f"s{steps}_px{size}")
    common = [
        f"data.root={DATA}", f"data.image_size={size}", "data.num_workers=0", f"trainer.steps={steps}",
        "trainer.eval_every=0", "trainer.checkpoint_every=0", f"scheduler.warmup_steps={max(1, steps // 6)}",
        "trainer.log_every=5", "eval.checkpoint=last", "eval.heatmaps=4", f"protocol.folds={folds}",
        "protocol.split_seed=0",
    ]
    rows = []
    for name in args.variants:
        config = load_config(RECIPE, [*common, *VARIANTS[name]])
        folder = out / name
        start = time.perf_counter()
        summary = run_protocol(config, folder, resume=(folder / "config.yaml").is_file(), progress=False,
                               report=False)
        seconds = time.perf_counter() - start
        rows.append((name, summary, seconds))
        print(f"{name}: {seconds:.0f} s for {len(summary['runs'])} folds", flush=True)
    lines = [
        f"PH2, stratified {folds}-fold CV (split seed 0), EfficientNet-Lite0 (offline ImageNet weights), "
        f"{size} px, {steps} steps of 24 images per fold, final weights; % mean +- sample std over folds.",
        "",
        "| variant | " + " | ".join(title for _, title in SUMMARY_KEYS) + " | s / fold |",
        "|---|" + "---|" * (len(SUMMARY_KEYS) + 1),
    ]
    for name, summary, seconds in rows:
        stats = summary["groups"]["all"]
        cells = [f"{100 * stats[k]['mean']:.1f} +- {100 * stats[k]['std']:.1f}"
                 if stats.get(k, {}).get("mean") is not None else "-" for k, _ in SUMMARY_KEYS]
        lines.append(f"| {LABELS[name]} | " + " | ".join(cells) + f" | {seconds / len(summary['runs']):.0f} |")
    table = "\n".join(lines)
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
