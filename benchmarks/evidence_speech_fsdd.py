"""Evidence for spoken-word metric learning with speaker transfer on the Free Spoken Digit Dataset.

Every speaker in turn is the target: word accuracy on its held-out utterances for
(CE | metric) x (target only | pre-train on the other speakers + fine-tune) at n = 1, 5, 10
target utterances per word, plus the pre-trained metric model with prototypes and no
fine-tuning, and a speaker-independent split (train on 4 speakers, test on 2). Prints
markdown tables (mean +- std over targets).

    python benchmarks/evidence_speech_fsdd.py [--quick] [--data ../shared/data/fsdd]
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from deepmetric.data.speech import SpeechDataset, fsdd_utterances
from deepmetric.experiments.speech_transfer import SpeechTrainSettings, run_speaker_independent, run_transfer

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fsdd"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--quick", action="store_true", help="two targets, n = 1 and 5, short training")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=150, help="target-only training steps")
    parser.add_argument("--pretrain-steps", type=int, default=400)
    parser.add_argument("--finetune-steps", type=int, default=100)
    parser.add_argument("--channels", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--embedding-dim", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.time()
    data = SpeechDataset(fsdd_utterances(args.data))
    speakers = sorted(set(data.speakers))
    targets = speakers[:2] if args.quick else speakers
    n_values = (1, 5) if args.quick else (1, 5, 10)
    settings = SpeechTrainSettings(steps=60 if args.quick else args.steps, channels=tuple(args.channels),
                                   embedding_dim=args.embedding_dim)
    pretrain, finetune = (100, 40) if args.quick else (args.pretrain_steps, args.finetune_steps)
    rows = []
    for target in targets:
        rows += run_transfer(data, target, n_values, args.seed, settings=settings,
                             pretrain_steps=pretrain, finetune_steps=finetune)
        print(f"# {target} done after {time.time() - start:.0f} s", flush=True)
    table: dict[tuple[str, int], list[float]] = defaultdict(list)
    for r in rows:
        table[(r["setting"], r["n"])].append(r["accuracy"])
    settings_order = sorted({r["setting"] for r in rows})
    print(f"\nWord accuracy on held-out target utterances (%), mean +- std over {len(targets)} target speakers, "
          f"seed {args.seed}; CNN channels {settings.channels}, {settings.embedding_dim}-d; steps: target-only "
          f"{settings.steps}, pre-train {pretrain}, fine-tune {finetune}\n")
    print("| setting | " + " | ".join(f"n = {n}" for n in n_values) + " |")
    print("|---|" + "---|" * len(n_values))
    for s in settings_order:
        cells = [f"{100 * np.mean(table[(s, n)]):.1f} +- {100 * np.std(table[(s, n)]):.1f}" for n in n_values]
        print(f"| {s} | " + " | ".join(cells) + " |")
    print("\nPer target (%):\n")
    print("| target | setting | " + " | ".join(f"n = {n}" for n in n_values) + " |")
    print("|---|---|" + "---|" * len(n_values))
    for target in targets:
        for s in settings_order:
            cells = [f"{100 * r['accuracy']:.1f}" for n in n_values for r in rows
                     if r["target"] == target and r["setting"] == s and r["n"] == n]
            print(f"| {target} | {s} | " + " | ".join(cells) + " |")
    test_speakers = speakers[-2:]
    si = run_speaker_independent(data, test_speakers, args.seed, settings, steps=pretrain)
    print(f"\nSpeaker-independent: train on {', '.join(s for s in speakers if s not in test_speakers)}, "
          f"test on {', '.join(test_speakers)}\n")
    print("| model | word accuracy (%) |\n|---|---|")
    for r in si:
        label = "CE classifier" if r["setting"] == "ce" else "metric (triplet) + prototypes of training speakers"
        print(f"| {label} | {100 * r['accuracy']:.1f} |")
    print(f"\ntotal time {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
