"""Evidence for spoken-word recognition with speaker transfer on the Free Spoken Digit Dataset.

Everything trains through the recipes and the one trainer: ``recipes/speech_fsdd_transfer.yaml``
(``protocol.name: speaker_transfer``) and ``recipes/speech_fsdd_speaker_independent.yaml``, run
by :func:`deepmetric.training.protocols.run_protocol` -- the same as ``deepmetric train RECIPE``
with the overrides printed in the header. Per pipeline (``--pipelines ARCH:LOSS``; architectures
:data:`ARCHS`: ``tdnn`` = the recipes' ``audio_tdnn`` default, ``cnn`` = issue 9's ``audio_cnn``
8/16/32; losses :data:`LOSSES`: ``metric`` = the recipes' default metric loss (ArcFace), ``ce`` =
the cosine-softmax classifier ``normalized_softmax``, and the candidates compared for issue 21)
and seed:

* the transfer grid, with ``settings=[pretrain_finetune]`` and ``trainer.steps = --pretrain-steps``
  (pre-training on the source speakers, then fine-tuning for ``--finetune-steps``), and with
  ``settings=[target_only]`` and ``trainer.steps = --steps`` (from scratch on the target's n
  utterances per word): two protocol runs because the recipe has one ``trainer.steps`` and the
  earlier evidence trained the two settings for different lengths;
* the speaker-independent split (train on 4 speakers, test on theo and yweweler, or on
  ``--si-test-speakers``) for ``--pretrain-steps`` steps.

Word accuracy: the nearest word prototype of the training items (``word_accuracy/prototype``) for
every metric loss -- including the margin/proxy losses, whose own heads are reported as "softmax"
-- and the softmax head (``word_accuracy``) for ``ce``; each pipeline also selects ``best.pt`` by
its rule. Printed: markdown tables (mean +- sample std over targets x seeds) and per-target
values; ``--out`` keeps the run folders (a finished grid is reused: ``run_protocol(..., resume=True)``).

    python benchmarks/evidence_speech_fsdd.py                       # tdnn:metric vs tdnn:ce, recipe targets, seed 0
    python benchmarks/evidence_speech_fsdd.py --pipelines cnn:triplet cnn:ce     # issue 9's evidence (old)
    python benchmarks/evidence_speech_fsdd.py --targets jackson theo --shots 1 5 --seeds 0 1 2 --out runs/ev_speech
    # issue 21's model/loss selection on validation speakers only (never theo/yweweler/jackson as test):
    python benchmarks/evidence_speech_fsdd.py --targets george --shots 1 5 --si-test-speakers lucas nicolas \\
        --pipelines cnn:triplet tdnn:triplet tdnn:multi_similarity tdnn:proxy_anchor tdnn:cosface \\
                    tdnn:arcface rescnn:cosface tdnn:ce
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

#: loss name in the tables -> loss overrides. "metric" is the recipes' default metric loss
#: (issue 21: ArcFace, chosen on validation speakers; the issue-9 evidence used "triplet"); "ce"
#: is the classifier pipeline (cosine softmax, recognised by its head). Every loss but "ce" is
#: recognised by the nearest word prototype (word_accuracy/prototype) and selects best.pt on it.
LOSSES: dict[str, list[str]] = {
    "metric": ["loss.name=arcface", "loss.params={scale: 16.0, margin: 0.2}"],
    "triplet": ["loss.name=triplet", "loss.params={margin: 0.2, mining: semihard}"],
    "multi_similarity": ["loss.name=multi_similarity", "loss.params={}"],
    "proxy_anchor": ["loss.name=proxy_anchor", "loss.params={}"],
    "cosface": ["loss.name=cosface", "loss.params={scale: 16.0, margin: 0.2}"],
    "arcface": ["loss.name=arcface", "loss.params={scale: 16.0, margin: 0.2}"],
    "ce": ["loss.name=normalized_softmax", "loss.params={}"],
}
#: the classifier pipeline: recognised by its softmax head (the headline word_accuracy)
CLASSIFIER_LOSSES = ("ce",)
#: architecture name in the tables -> model overrides. "cnn": the issue-9 evidence network
#: (audio_cnn 8/16/32, masked mean, 32-d); "tdnn": the issue-21 default (audio_tdnn, x-vector
#: style TDNN with residual shortcuts and statistics pooling, 64-d); "rescnn": audio_cnn with
#: residual blocks 8/16/32 and statistics pooling, 32-d.
ARCHS: dict[str, list[str]] = {
    "cnn": ["model.name=audio_cnn", "model.params={n_mels: 40, channels: [8, 16, 32]}", "model.pooling=avg",
            "model.embedding_dim=32"],
    "tdnn": ["model.name=audio_tdnn",
             ("model.params={n_mels: 40, channels: [64, 64, 64, 64, 192], "
              "kernel_sizes: [5, 3, 3, 1, 1], dilations: [1, 2, 3, 1, 1], residual: true}"),
             "model.pooling=stats", "model.embedding_dim=64"],
    "rescnn": ["model.name=audio_cnn", "model.params={n_mels: 40, channels: [8, 16, 32], residual: true}",
               "model.pooling=stats", "model.embedding_dim=32"],
}
#: setting of the transfer protocol -> label in the tables
SETTINGS = {"source_only": "pre-trained on the source speakers only", "target_only": "target only",
            "pretrain_finetune": "pre-train + fine-tune"}


def pipeline_overrides(loss: str, arch: str) -> list[str]:
    """Architecture and loss overrides of one pipeline; a metric loss selects best.pt (and
    reports) by the nearest word prototype."""
    select = [f"eval.select_metric={headline(loss)}"]
    return [*ARCHS[arch], *LOSSES[loss], *select]


def headline(loss: str) -> str:
    """The word-accuracy key reported for ``loss``: the head for "ce", prototypes otherwise."""
    return "word_accuracy" if loss in CLASSIFIER_LOSSES else "word_accuracy/prototype"


def model_overrides(args: argparse.Namespace) -> list[str]:
    """Budget overrides shared by every run (see the module docstring)."""
    return [
        f"data.root={args.data}",
        f"model.dropout={args.dropout}",
        f"optimizer.lr={args.lr}",
        "scheduler.name=none", "scheduler.warmup_steps=0",  # constant learning rate, as the earlier evidence
        f"trainer.eval_every={args.eval_every}",
        f"trainer.checkpoint_every={args.eval_every}",
    ]


def transfer_overrides(args: argparse.Namespace, loss: str, arch: str, seed: int, setting: str) -> list[str]:
    steps = args.pretrain_steps if setting == "pretrain_finetune" else args.steps
    targets = ",".join(args.targets) if args.targets else None
    shots = ",".join(str(n) for n in args.shots)
    return [
        *model_overrides(args), *pipeline_overrides(loss, arch), f"seed={seed}", f"trainer.steps={steps}",
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
    """One row per sub-run of a transfer summary.json; ``word_accuracy`` is the pipeline's rule
    (:func:`headline`), the other ``word_accuracy/*`` keys are kept as measured."""
    rows = []
    for r in summary["runs"]:
        test = {k: v for k, v in r["test"].items() if k.startswith("word_accuracy")}
        rows.append({"loss": loss, "seed": seed, "target": r["params"]["target"], "setting": r["params"]["setting"],
                     "n": r["params"]["shots"], **test, "word_accuracy": test[headline(loss)]})
    return rows


def mean_std(values: Sequence[float]) -> str:
    pct = [100 * v for v in values]
    if len(pct) == 1:
        return f"{pct[0]:.1f}"
    return f"{statistics.mean(pct):.1f} +- {statistics.stdev(pct):.1f}"


def parse_pipeline(text: str) -> tuple[str, str]:
    """``"ARCH:LOSS"`` (keys of :data:`ARCHS` and :data:`LOSSES`) -> ``(arch, loss)``."""
    arch, _, loss = text.partition(":")
    if arch not in ARCHS or loss not in LOSSES:
        raise argparse.ArgumentTypeError(f"pipeline '{text}' is not ARCH:LOSS with ARCH in {list(ARCHS)} and LOSS in "
                                         f"{list(LOSSES)}")
    return arch, loss


def label_of(arch: str, loss: str) -> str:
    return f"{arch} + {loss}"


def print_tables(rows: list[dict[str, Any]], shots: Sequence[int], pipelines: Sequence[str],
                 metric: str = "word_accuracy") -> None:
    columns = [0, *shots]
    print("| pipeline | setting | " + " | ".join(f"n = {n}" for n in columns) + " |")
    print("|---|---|" + "---|" * len(columns))
    for name in pipelines:
        for setting, label in SETTINGS.items():
            cells = []
            for n in columns:
                values = [r[metric] for r in rows if r["loss"] == name and r["setting"] == setting and r["n"] == n]
                cells.append(mean_std(values) if values else "")
            if any(cells):
                print(f"| {name} | {label} | " + " | ".join(cells) + " |")


def print_per_target(rows: list[dict[str, Any]], shots: Sequence[int], pipelines: Sequence[str]) -> None:
    columns = [0, *shots]
    print("| target | seed | pipeline | setting | " + " | ".join(f"n = {n}" for n in columns) + " |")
    print("|---|---|---|---|" + "---|" * len(columns))
    keys = sorted({(r["target"], r["seed"], r["loss"], r["setting"]) for r in rows},
                  key=lambda k: (k[0], k[1], list(pipelines).index(k[2]), list(SETTINGS).index(k[3])))
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
    parser.add_argument("--pipelines", nargs="+", type=parse_pipeline, default=None,
                        help="ARCH:LOSS pairs (default: tdnn:metric tdnn:ce, the recipes' defaults and their "
                             "classifier; the issue-9 evidence is cnn:triplet cnn:ce)")
    parser.add_argument("--losses", nargs="+", choices=list(LOSSES), default=None,
                        help="shorthand for --pipelines ARCH:LOSS with --arch")
    parser.add_argument("--arch", choices=list(ARCHS), default="tdnn", help="architecture of --losses")
    parser.add_argument("--steps", type=int, default=60, help="target-only training steps")
    parser.add_argument("--pretrain-steps", type=int, default=150, help="pre-training (and speaker-independent) steps")
    parser.add_argument("--finetune-steps", type=int, default=40)
    parser.add_argument("--eval-every", type=int, default=50, help="validation cadence of the pre-training runs")
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--lr", type=float, default=0.002)
    parser.add_argument("--settings", nargs="+", choices=["pretrain_finetune", "target_only"],
                        default=["pretrain_finetune", "target_only"], help="transfer settings to run")
    parser.add_argument("--no-transfer", action="store_true", help="skip the transfer runs")
    parser.add_argument("--no-speaker-independent", action="store_true", help="skip the speaker-independent runs")
    parser.add_argument("--si-test-speakers", nargs="+", default=None,
                        help="speaker-independent test speakers (default: the recipe's theo and yweweler); "
                             "model selection uses others, e.g. lucas nicolas")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="one target, n = 1 and 5, a few steps: checks that it runs")
    args = parser.parse_args(argv)
    if args.quick:
        args.targets, args.shots = (args.targets or ["jackson"])[:1], [1, 5]
        args.steps, args.pretrain_steps, args.finetune_steps, args.eval_every = 4, 6, 3, 3
    if args.pipelines is None:
        args.pipelines = ([(args.arch, loss) for loss in args.losses] if args.losses
                          else [("tdnn", "metric"), ("tdnn", "ce")])
    import torch

    torch.set_num_threads(args.threads)
    start = time.time()
    out = args.out or Path(tempfile.mkdtemp(prefix="evidence_speech_"))
    rows: list[dict[str, Any]] = []
    independent: dict[str, dict[str, Any]] = {}
    names = [label_of(arch, loss) for arch, loss in args.pipelines]
    si_speakers = ",".join(args.si_test_speakers) if args.si_test_speakers else None
    for arch, loss in args.pipelines:
        name = label_of(arch, loss)
        for seed in args.seeds:
            for setting in ([] if args.no_transfer else args.settings):
                folder = out / f"{arch}_{loss}" / f"seed{seed}" / setting
                summary = run(TRANSFER_RECIPE, transfer_overrides(args, loss, arch, seed, setting), folder)
                rows += rows_of(summary, name, seed)
                print(f"# {name}, seed {seed}, {setting}: done after {time.time() - start:.0f} s", file=sys.stderr)
            if not args.no_speaker_independent:
                sub = "speaker_independent" + (f"_test-{si_speakers.replace(',', '-')}" if si_speakers else "")
                folder = out / f"{arch}_{loss}" / f"seed{seed}" / sub
                overrides = [*model_overrides(args), *pipeline_overrides(loss, arch), f"seed={seed}",
                             f"trainer.steps={args.pretrain_steps}",
                             *([f"data.params.test_speakers=[{si_speakers}]"] if si_speakers else [])]
                test = dict(run(INDEPENDENT_RECIPE, overrides, folder)["test"])
                test["word_accuracy"] = test[headline(loss)]
                independent[f"{name}, seed {seed}"] = test
                print(f"# {name}, seed {seed}, speaker-independent: done after {time.time() - start:.0f} s",
                      file=sys.stderr)
    if args.quick:
        print("QUICK RUN: not evidence.\n")
    targets = sorted({r["target"] for r in rows})
    if rows:
        print(f"Word accuracy on the target's held-out utterances (%), mean +- sample std over {len(targets)} target "
              f"speaker(s) ({', '.join(targets)}) x seed(s) {args.seeds}; n = 0: the pre-trained model alone "
              f"(prototypes / head of the source speakers). Steps: target-only {args.steps}, pre-train "
              f"{args.pretrain_steps}, fine-tune {args.finetune_steps}. Metric losses: nearest word prototype; "
              "ce: softmax head.\n")
        print_tables(rows, args.shots, names)
        print("\nEvery recognition rule (%, mean over runs): prototype / 1-NN / softmax head\n")
        columns = [0, *args.shots]
        print("| pipeline | setting | " + " | ".join(f"n = {n}" for n in columns) + " |")
        print("|---|---|" + "---|" * len(columns))
        for name in names:
            for setting, label in SETTINGS.items():
                cells = []
                for n in columns:
                    chosen = [r for r in rows if r["loss"] == name and r["setting"] == setting and r["n"] == n]
                    parts = [f"{100 * statistics.mean(r[f'word_accuracy/{m}'] for r in chosen):.1f}"
                             if chosen and all(f"word_accuracy/{m}" in r for r in chosen) else "-"
                             for m in ("prototype", "knn", "softmax")]
                    cells.append(" / ".join(parts) if chosen else "")
                if any(cells):
                    print(f"| {name} | {label} | " + " | ".join(cells) + " |")
        print("\nPer target (%):\n")
        print_per_target(rows, args.shots, names)
    if independent:
        who = args.si_test_speakers or ["theo", "yweweler"]
        print(f"\nSpeaker-independent (test on {', '.join(who)}, train on the other speakers), word accuracy (%; "
              "the pipeline's rule: prototypes for metric losses, the head for ce):\n")
        print("| pipeline | seeds | word_accuracy (mean +- std) |\n|---|---|---|")
        for name in names:
            values = [test["word_accuracy"] for key, test in independent.items() if key.startswith(f"{name}, seed")]
            if values:
                print(f"| {name} | {len(values)} | {mean_std(values)} |")
        print("\n| pipeline, seed | word_accuracy | prototype | 1-NN | softmax |\n|---|---|---|---|---|")
        for name, test in independent.items():
            cells = [f"{100 * test[k]:.1f}" if test.get(k) is not None else "-"
                     for k in ("word_accuracy", "word_accuracy/prototype", "word_accuracy/knn", "word_accuracy/softmax")]
            print(f"| {name} | " + " | ".join(cells) + " |")
    (out / "evidence.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                   "rows": rows, "speaker_independent": independent}, indent=2))
    print(f"\nrun folders: {out}; total time {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
