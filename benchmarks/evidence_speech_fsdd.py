"""Evidence for spoken-word recognition with speaker transfer on the Free Spoken Digit Dataset.

Everything trains through the recipes and the one trainer: ``recipes/speech_fsdd_transfer.yaml``
(``protocol.name: speaker_transfer``) and ``recipes/speech_fsdd_speaker_independent.yaml``, run
by :func:`deepmetric.training.protocols.run_protocol` -- the same as ``deepmetric train RECIPE``
with the overrides printed in the header. Per loss (semi-hard triplet = "metric", cosine softmax
``normalized_softmax`` = "ce") and seed:

* the transfer grid, with ``settings=[pretrain_finetune]`` and ``trainer.steps = --pretrain-steps``
  (pre-training on the source speakers, then fine-tuning for ``--finetune-steps``), and with
  ``settings=[target_only]`` and ``trainer.steps = --steps`` (from scratch on the target's n
  utterances per word): two protocol runs because the recipe has one ``trainer.steps`` and the
  earlier evidence trained the two settings for different lengths;
* the speaker-independent split (train on 4 speakers, test on theo and yweweler) for
  ``--pretrain-steps`` steps.

Word accuracy (``word_accuracy`` of ``eval.protocol: word_recognition``): the nearest word
prototype of the training items for the metric loss, the softmax head for the classifier loss.
Printed: markdown tables (mean +- sample std over the target speakers) and per-target values;
``--out`` keeps the run folders (a finished grid is reused: ``run_protocol(..., resume=True)``).

    python benchmarks/evidence_speech_fsdd.py                       # targets of the recipe, seed 0
    python benchmarks/evidence_speech_fsdd.py --targets george lucas --seeds 0 1 --out runs/ev_speech
    python benchmarks/evidence_speech_fsdd.py --quick               # a few steps: checks that it runs
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "fsdd"
TRANSFER_RECIPE = REPO / "recipes" / "speech_fsdd_transfer.yaml"
INDEPENDENT_RECIPE = REPO / "recipes" / "speech_fsdd_speaker_independent.yaml"

#: loss name in the tables -> loss overrides
LOSSES: dict[str, list[str]] = {
    "metric": ["loss.name=triplet", "loss.params={margin: 0.2, mining: semihard}"],
    "ce": ["loss.name=normalized_softmax", "loss.params={}"],
}
#: setting of the transfer protocol -> label in the tables
SETTINGS = {"source_only": "pre-trained on the source speakers only", "target_only": "target only",
            "pretrain_finetune": "pre-train + fine-tune"}


def model_overrides(args: argparse.Namespace) -> list[str]:
    """Budget and architecture overrides shared by every run (see the module docstring)."""
    channels = ",".join(str(c) for c in args.channels)
    return [
        f"data.root={args.data}",
        f"model.params.channels=[{channels}]",
        f"model.embedding_dim={args.embedding_dim}",
        f"model.dropout={args.dropout}",
        f"optimizer.lr={args.lr}",
        "scheduler.name=none", "scheduler.warmup_steps=0",  # constant learning rate, as the earlier evidence
        f"trainer.eval_every={args.eval_every}",
        f"trainer.checkpoint_every={args.eval_every}",
    ]


def transfer_overrides(args: argparse.Namespace, loss: str, seed: int, setting: str) -> list[str]:
    steps = args.pretrain_steps if setting == "pretrain_finetune" else args.steps
    targets = ",".join(args.targets) if args.targets else None
    shots = ",".join(str(n) for n in args.shots)
    return [
        *model_overrides(args), *LOSSES[loss], f"seed={seed}", f"trainer.steps={steps}",
        f"protocol.settings=[{setting}]", f"protocol.shots=[{shots}]",
        f"protocol.finetune_steps={args.finetune_steps}",
        *([f"protocol.target_speakers=[{targets}]"] if targets else []),
    ]


def run(recipe: Path, overrides: list[str], folder: Path) -> dict[str, Any]:
    """``deepmetric train recipe overrides --out folder`` (finished sub-runs are reused)."""
    from deepmetric.config import load_config
    from deepmetric.training.protocols import run_protocol, sub_run_finished

    config = load_config(recipe, overrides)
    if config.protocol.name == "single" and sub_run_finished(folder):
        return json.loads((folder / "metrics.json").read_text())
    resume = (folder / "config.yaml").is_file()
    return run_protocol(config, folder, resume=resume, progress=False, report=False)


def rows_of(summary: dict[str, Any], loss: str, seed: int) -> list[dict[str, Any]]:
    """One row per sub-run of a transfer summary.json."""
    return [{"loss": loss, "seed": seed, "target": r["params"]["target"], "setting": r["params"]["setting"],
             "n": r["params"]["shots"], **{k: v for k, v in r["test"].items() if k.startswith("word_accuracy")}}
            for r in summary["runs"]]


def mean_std(values: Sequence[float]) -> str:
    pct = [100 * v for v in values]
    if len(pct) == 1:
        return f"{pct[0]:.1f}"
    return f"{statistics.mean(pct):.1f} +- {statistics.stdev(pct):.1f}"


def print_tables(rows: list[dict[str, Any]], shots: Sequence[int], metric: str = "word_accuracy") -> None:
    columns = [0, *shots]
    print("| loss | setting | " + " | ".join(f"n = {n}" for n in columns) + " |")
    print("|---|---|" + "---|" * len(columns))
    for loss in LOSSES:
        for setting, label in SETTINGS.items():
            cells = []
            for n in columns:
                values = [r[metric] for r in rows if r["loss"] == loss and r["setting"] == setting and r["n"] == n]
                cells.append(mean_std(values) if values else "")
            if any(cells):
                print(f"| {loss} | {label} | " + " | ".join(cells) + " |")


def print_per_target(rows: list[dict[str, Any]], shots: Sequence[int]) -> None:
    columns = [0, *shots]
    print("| target | seed | loss | setting | " + " | ".join(f"n = {n}" for n in columns) + " |")
    print("|---|---|---|---|" + "---|" * len(columns))
    keys = sorted({(r["target"], r["seed"], r["loss"], r["setting"]) for r in rows},
                  key=lambda k: (k[0], k[1], list(LOSSES).index(k[2]), list(SETTINGS).index(k[3])))
    for target, seed, loss, setting in keys:
        by_n = {r["n"]: r["word_accuracy"] for r in rows
                if (r["target"], r["seed"], r["loss"], r["setting"]) == (target, seed, loss, setting)}
        cells = [f"{100 * by_n[n]:.1f}" if n in by_n else "" for n in columns]
        print(f"| {target} | {seed} | {loss} | {SETTINGS[setting]} | " + " | ".join(cells) + " |")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=None, help="keep the run folders here (default: a temporary folder)")
    parser.add_argument("--targets", nargs="+", default=None, help="target speakers (default: the recipe's)")
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 5, 10])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--losses", nargs="+", choices=list(LOSSES), default=list(LOSSES))
    parser.add_argument("--steps", type=int, default=60, help="target-only training steps")
    parser.add_argument("--pretrain-steps", type=int, default=150, help="pre-training (and speaker-independent) steps")
    parser.add_argument("--finetune-steps", type=int, default=40)
    parser.add_argument("--eval-every", type=int, default=50, help="validation cadence of the pre-training runs")
    parser.add_argument("--channels", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--embedding-dim", type=int, default=32)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--lr", type=float, default=0.002)
    parser.add_argument("--no-speaker-independent", action="store_true", help="skip the speaker-independent runs")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="one target, n = 1 and 5, a few steps: checks that it runs")
    args = parser.parse_args(argv)
    if args.quick:
        args.targets, args.shots = (args.targets or ["jackson"])[:1], [1, 5]
        args.steps, args.pretrain_steps, args.finetune_steps, args.eval_every = 4, 6, 3, 3
    import torch

    torch.set_num_threads(args.threads)
    start = time.time()
    out = args.out or Path(tempfile.mkdtemp(prefix="evidence_speech_"))
    rows: list[dict[str, Any]] = []
    independent: dict[str, dict[str, Any]] = {}
    for loss in args.losses:
        for seed in args.seeds:
            for setting in ("pretrain_finetune", "target_only"):
                folder = out / loss / f"seed{seed}" / setting
                summary = run(TRANSFER_RECIPE, transfer_overrides(args, loss, seed, setting), folder)
                rows += rows_of(summary, loss, seed)
                print(f"# {loss}, seed {seed}, {setting}: done after {time.time() - start:.0f} s", file=sys.stderr)
            if not args.no_speaker_independent:
                folder = out / loss / f"seed{seed}" / "speaker_independent"
                overrides = [*model_overrides(args), *LOSSES[loss], f"seed={seed}", f"trainer.steps={args.pretrain_steps}"]
                independent[f"{loss}, seed {seed}"] = run(INDEPENDENT_RECIPE, overrides, folder)["test"]
    if args.quick:
        print("QUICK RUN: not evidence.\n")
    targets = sorted({r["target"] for r in rows})
    print(f"Word accuracy on the target's held-out utterances (%), mean +- sample std over {len(targets)} target "
          f"speaker(s) ({', '.join(targets)}) x seed(s) {args.seeds}; n = 0: the pre-trained model alone (prototypes / "
          f"head of the source speakers). Steps: target-only {args.steps}, pre-train {args.pretrain_steps}, fine-tune "
          f"{args.finetune_steps}; CNN channels {args.channels}, {args.embedding_dim}-d.\n")
    print_tables(rows, args.shots)
    print("\nEvery recognition rule (%, mean over runs): prototype / 1-NN / softmax head\n")
    columns = [0, *args.shots]
    print("| loss | setting | " + " | ".join(f"n = {n}" for n in columns) + " |")
    print("|---|---|" + "---|" * len(columns))
    for loss in LOSSES:
        for setting, label in SETTINGS.items():
            cells = []
            for n in columns:
                chosen = [r for r in rows if r["loss"] == loss and r["setting"] == setting and r["n"] == n]
                parts = [f"{100 * statistics.mean(r[f'word_accuracy/{m}'] for r in chosen):.1f}"
                         if chosen and all(f"word_accuracy/{m}" in r for r in chosen) else "-"
                         for m in ("prototype", "knn", "softmax")]
                cells.append(" / ".join(parts) if chosen else "")
            if any(cells):
                print(f"| {loss} | {label} | " + " | ".join(cells) + " |")
    print("\nPer target (%):\n")
    print_per_target(rows, args.shots)
    if independent:
        print("\nSpeaker-independent (train on 4 speakers, test on theo and yweweler), word accuracy (%):\n")
        print("| loss, seed | word_accuracy | prototype | 1-NN | softmax |\n|---|---|---|---|---|")
        for name, test in independent.items():
            cells = [f"{100 * test[k]:.1f}" if test.get(k) is not None else "-"
                     for k in ("word_accuracy", "word_accuracy/prototype", "word_accuracy/knn", "word_accuracy/softmax")]
            print(f"| {name} | " + " | ".join(cells) + " |")
    (out / "evidence.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                   "rows": rows, "speaker_independent": independent}, indent=2))
    print(f"\nrun folders: {out}; total time {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
