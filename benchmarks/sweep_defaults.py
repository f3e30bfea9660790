"""Per-method defaults chosen on VALIDATION data: a small grid per loss, scored on classes held out
of the training split, never on the test split.

Each candidate trains through the one trainer with the protocol of ``evidence_transfer.py``
(offline EfficientNet-Lite0 -> 128-d, P x K batches, AdamW, cosine schedule; whole training
classes held out for validation, ``data.val_by: classes``) and is scored by the best validation
MAP@R of the run (the untrained network is a candidate too, so "training never helped" shows up
as a score equal to the untrained network's). The test split is loaded by the trainer but its
metrics are not read here. Printed: per loss, every candidate's validation MAP@R (mean over
seeds) and the chosen one. A candidate replaces the current defaults (always the first of each
grid) only when it beats them by more than ``--min-gain`` (default 2 points of MAP@R, about twice
the seed-to-seed spread of one 100-step Olivetti run): a change of default must beat noise. Results are appended to ``--results`` (JSON lines): an interrupted
sweep resumes.

    python benchmarks/sweep_defaults.py                                   # olivetti, 100 steps, 64 px
    python benchmarks/sweep_defaults.py --losses osm_caa ranked_list --seeds 0 1
    python benchmarks/sweep_defaults.py --quick                            # 2 steps: checks that it runs
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from evidence_transfer import DATASETS, ROOT, config_for, read_results  # noqa: E402

#: candidate settings per loss: loss params, and optionally "finetune" options and a "synthesis" wrapper
GRIDS: dict[str, list[dict[str, Any]]] = {
    "multi_similarity": [{}, {"synthesis": "symmetrical"}],
    "osm_caa": [{}, {"ce_weight": 0.1}, {"ce_weight": 0.0}, {"finetune": {"linear_probe_fraction": 0.2}}],
    "ranked_list": [{}, {"margin": 0.8, "alpha": 1.4}, {"t_n": 1.0}, {"finetune": {"linear_probe_fraction": 0.2}}],
    "center_structured": [{}, {"ce_weight": 0.1}, {"lam_c": 0.01}],
    "triplet_hybrid": [{}, {"ce_weight": 0.1}, {"ce_weight": 0.1, "margin": 0.1}],
    "arcface": [{}, {"scale": 16.0, "margin": 0.2}, {"scale": 32.0, "margin": 0.3}],
    "cosface": [{}, {"scale": 16.0, "margin": 0.2}, {"scale": 32.0, "margin": 0.25}],
    "subcenter_arcface": [{}, {"scale": 16.0, "margin": 0.2}],
}


def label(candidate: dict[str, Any]) -> str:
    return json.dumps(candidate, sort_keys=True) if candidate else "defaults"


def choose(scored: list[tuple[float, dict[str, Any], Any]], min_gain: float) -> dict[str, Any]:
    """The candidate to use as default: the best-scoring one if it beats the defaults (the first
    entry) by more than ``min_gain``, else the defaults."""
    default_value, default, _ = scored[0]
    value, best, _ = max(scored, key=lambda t: t[0])
    return best if value > default_value + min_gain else default


def run_candidate(dataset: str, loss: str, candidate: dict[str, Any], seed: int, steps: int, image_size: int,
                  lr: float, scratch: Path) -> dict[str, Any]:
    from deepmetric.training import fit

    params = {k: v for k, v in candidate.items() if k not in ("finetune", "synthesis")}
    config = config_for(dataset, loss, "plain", seed, steps, image_size, lr, scratch, loss_params=params)
    data = config.to_dict()
    if "synthesis" in candidate:
        data["loss"]["synthesis"] = candidate["synthesis"]
    for key, value in candidate.get("finetune", {}).items():
        if key == "linear_probe_fraction":
            data["finetune"]["linear_probe_steps"] = max(1, round(value * steps))
        else:
            data["finetune"][key] = value
    from deepmetric.config import Config

    config = Config.model_validate(data)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        summary = fit(config, Path(tmp) / "run", progress=False, report=False)
        wall = time.perf_counter() - started
    untrained = summary["evaluations"][0]["metrics"]["map@r"]
    return {"val_map": summary["best"]["value"], "val_untrained": untrained, "best_step": summary["best"]["step"],
            "wall": wall}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="olivetti", choices=list(DATASETS))
    ap.add_argument("--losses", nargs="+", default=list(GRIDS), choices=list(GRIDS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--results", type=Path, default=ROOT / "runs" / "sweep_defaults.jsonl")
    ap.add_argument("--min-gain", type=float, default=0.02,
                    help="validation MAP@R a candidate must gain over the defaults to replace them (default 0.02)")
    ap.add_argument("--quick", action="store_true", help="osm_caa, 2 candidates, 4 steps at 32 px")
    args = ap.parse_args(argv)
    grids = {name: GRIDS[name] for name in args.losses}
    if args.quick:
        grids, args.seeds, args.steps, args.image_size = {"osm_caa": GRIDS["osm_caa"][:2]}, [0], 4, 32
    torch.set_num_threads(args.threads)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    budget = (args.dataset, args.steps, args.image_size, args.lr)

    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        return (r["dataset"], r["steps"], r["image_size"], r["lr"], r["loss"], r["candidate"], r["seed"])

    done = {key(r): r for r in read_results(args.results)}
    with tempfile.TemporaryDirectory() as scratch:
        for loss, candidates in grids.items():
            for candidate in candidates:
                for seed in args.seeds:
                    row = {"dataset": args.dataset, "steps": args.steps, "image_size": args.image_size,
                           "lr": args.lr, "loss": loss, "candidate": label(candidate), "seed": seed}
                    if key(row) in done:
                        continue
                    row.update(run_candidate(args.dataset, loss, candidate, seed, args.steps, args.image_size,
                                             args.lr, Path(scratch)))
                    done[key(row)] = row
                    with args.results.open("a", encoding="utf-8") as handle:
                        handle.write(json.dumps(row) + "\n")
                    print(f"{loss} {row['candidate']} seed {seed}: val MAP@R {row['val_map']:.3f} "
                          f"(untrained {row['val_untrained']:.3f}, step {row['best_step']}, {row['wall']:.0f} s)",
                          file=sys.stderr, flush=True)
    print(f"\n{args.dataset}, {args.steps} steps at {args.image_size} px, lr {args.lr}, seeds {args.seeds}: "
          "validation MAP@R in % (held-out TRAINING classes; mean over seeds); a candidate replaces the defaults "
          f"only when it gains more than {100 * args.min_gain:.1f} points\n")
    print("| loss | candidate | val MAP@R | untrained | chosen step | chosen |")
    print("|---|---|---|---|---|---|")
    for loss, candidates in grids.items():
        scored = []
        for candidate in candidates:
            rows = [done[(*budget, loss, label(candidate), s)] for s in args.seeds]
            scored.append((statistics.fmean(r["val_map"] for r in rows), candidate, rows))
        best = choose(scored, args.min_gain)
        for value, candidate, rows in scored:
            print(f"| {loss} | {label(candidate)} | {100 * value:.1f} "
                  f"| {100 * statistics.fmean(r['val_untrained'] for r in rows):.1f} "
                  f"| {', '.join(str(r['best_step']) for r in rows)} | {'**yes**' if candidate is best else ''} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
