"""Evidence for OSM+CAA (Wang et al., AAAI 2019, arXiv 1811.01459) on real data.

Compares, with the same backbone, batches and training budget, on zero-shot retrieval (test
classes never seen in training):

* plain contrastive (the same loss with every weight 1: ``use_osm=False, use_caa=False``),
* OSM only, CAA only (contrastive weights + class-aware attention, with its CE-trained
  classifier), OSM + CAA (+ CE),
* controls: contrastive + CE and OSM + CE (the classifier's cross-entropy without attention).

Datasets (from ``../shared/data``): Olivetti faces (20 people train / 20 unseen people test) and
Omniglot small1 (half the characters train, the other half unseen test). Every run goes through
``deepmetric.training.fit`` (validation split carved from the training classes, checkpoint
chosen on it); reported are test Recall@1 and MAP@R of that checkpoint and of the last step,
mean +- std over seeds, next to the untrained-network baseline.

Protocol (``base_config``, shared by evidence_rll.py and evidence_synthesis.py): timm's tiny
``test_resnet`` trained from scratch (random init: ImageNet features would mask the differences
between losses), 1-channel 32 px input, 64-d embedding, P x K = 16 x 2 batches, 150 steps,
validation every 50 steps -- sized so that about 100 runs fit in under an hour on 2 shared CPU
cores (run with ``OMP_NUM_THREADS=1``; the script also sets one torch thread).

    python benchmarks/evidence_osm_caa.py                 # 3 seeds, full budget
    python benchmarks/evidence_osm_caa.py --quick         # a few steps: checks that it runs
    python benchmarks/evidence_osm_caa.py --out runs/ev   # keep run folders (finished runs are reused)
    python benchmarks/evidence_osm_caa.py --out runs/ev --report-only   # table of finished runs only

The seed also draws the class split, so the spread covers both initialisation and split.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

#: method name -> loss section of the config
METHODS: dict[str, dict[str, Any]] = {
    "contrastive (plain)": {"name": "osm_caa", "params": {"use_osm": False, "use_caa": False, "ce_weight": 0.0}},
    "OSM": {"name": "osm_caa", "params": {"use_caa": False, "ce_weight": 0.0}},
    "CAA only (+ CE)": {"name": "osm_caa", "params": {"use_osm": False, "use_caa": True, "ce_weight": 1.0}},
    "OSM + CAA (+ CE)": {"name": "osm_caa", "params": {"use_caa": True, "ce_weight": 1.0}},
    # controls: the classifier's cross-entropy alone, without CAA's attention
    "contrastive + CE": {"name": "osm_caa", "params": {"use_osm": False, "use_caa": False, "ce_weight": 1.0}},
    "OSM + CE": {"name": "osm_caa", "params": {"use_caa": False, "ce_weight": 1.0}},
}


def dataset_sections(data_root: Path) -> dict[str, dict[str, Any]]:
    """Data sections of the two zero-shot retrieval tasks."""
    return {
        "olivetti": {
            "name": "olivetti",
            "root": str(data_root / "olivetti" / "olivetti.npz"),
            "params": {"test_fraction": 0.5},  # 20 people train, 20 unseen people test
            "val_fraction": 0.2,
            "val_by": "classes",
        },
        "omniglot": {
            "name": "omniglot",
            "root": str(data_root / "omniglot-small1" / "images_background_small1.zip"),
            "params": {"test_fraction": 0.5, "split_by": "characters"},
            "val_fraction": 0.2,
            "val_by": "classes",
        },
    }


#: metrics kept per run (test of the selected checkpoint, test of the last step, untrained baseline)
RUN_METRICS: tuple[str, ...] = ("recall@1", "map@r", "nmi", "f1")


def base_config(quick: bool) -> dict[str, Any]:
    """Everything but data and loss: one backbone and one budget for every method (and for the
    RLL and synthesis evidence). A tiny ResNet from scratch, so that the loss, not ImageNet
    features, shapes the embedding; P x K = 16 x 2 (K = 2 is what symmetrical synthesis needs)."""
    return {
        "data": {"image_size": 32, "num_workers": 0},
        "sampler": {"p": 16, "k": 2},
        "model": {"backbone": "test_resnet", "pretrained": False, "embedding_dim": 64, "in_chans": 1},
        "optimizer": {"name": "adamw", "lr": 1e-3, "backbone_lr_mult": 1.0},
        "scheduler": {"name": "cosine", "warmup_steps": 2 if quick else 10},
        "trainer": {
            "steps": 3 if quick else 150,
            "eval_every": 0 if quick else 50,
            "checkpoint_every": 1000,
            "log_every": 10,
        },
        "eval": {"split": "val", "select_metric": "map@r", "k_values": [1, 2, 4, 8], "batch_size": 256},
    }


def _merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        out[key] = _merge(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) else value
    return out


def run_one(config_dict: dict[str, Any], run_dir: Path, train: bool = True) -> dict[str, Any] | None:
    """Train one configuration (or reuse a finished run folder) and return its metrics summary;
    with ``train=False`` only a finished run is read (None when there is none)."""
    import torch

    from deepmetric.config import load_config
    from deepmetric.training import fit

    metrics_file = run_dir / "metrics.json"
    if metrics_file.is_file():
        summary = json.loads(metrics_file.read_text())
        if summary.get("test"):
            return summary
    if not train:
        return None
    if run_dir.exists():  # an interrupted run: start it again from scratch
        import shutil

        shutil.rmtree(run_dir)
    torch.set_num_threads(1)  # tiny convolutions: extra threads only cost on a shared machine
    return fit(load_config(config_dict), run_dir, progress=False, report=False)  # no HTML/plots: saves ~10 s a run


def run_comparison(
    methods: Mapping[str, Mapping[str, Any]],
    datasets: Sequence[str],
    seeds: Sequence[int],
    quick: bool,
    out_dir: Path,
    data_root: Path = SHARED_DATA,
    train: bool = True,
) -> list[dict[str, Any]]:
    """Every (dataset, seed, method) run (seed-major, so an interrupted comparison has every
    method at the first seeds); returns one row per finished run (``train=False``: only runs
    already finished in ``out_dir``)."""
    sections = dataset_sections(data_root)
    rows = []
    for dataset in datasets:
        for seed in seeds:
            for method, loss in methods.items():
                config = _merge(base_config(quick), {"seed": seed, "data": sections[dataset], "loss": dict(loss)})
                slug = "".join(c if c.isalnum() else "_" for c in method).strip("_")
                summary = run_one(config, out_dir / dataset / slug / f"seed{seed}", train)
                if summary is None:
                    continue
                baseline = (summary.get("baseline") or {}).get("metrics") or {}
                last = summary.get("test_last") or summary["test"]
                row: dict[str, Any] = {"dataset": dataset, "method": method, "seed": seed}
                for key in RUN_METRICS:
                    row[key] = summary["test"].get(key)
                    row[f"last_{key}"] = last.get(key)
                    row[f"baseline_{key}"] = baseline.get(key)
                row["test_step"] = summary.get("test_step")
                rows.append(row)
                print(
                    f"{dataset:9s} {method:22s} seed {seed}: R@1 {rows[-1]['recall@1']:.4f} "
                    f"MAP@R {rows[-1]['map@r']:.4f} (best step {rows[-1]['test_step']})",
                    file=sys.stderr,
                )
    return rows


def _fmt(values: Sequence[float | None]) -> str:
    vals = [100.0 * v for v in values if v is not None]
    if not vals:
        return "-"
    if len(vals) == 1:
        return f"{vals[0]:.1f}"
    return f"{statistics.mean(vals):.1f} +- {statistics.stdev(vals):.1f}"


METRIC_NAMES = {"recall@1": "Recall@1", "map@r": "MAP@R", "nmi": "NMI", "f1": "F1"}


def markdown_table(
    rows: Sequence[Mapping[str, Any]], metrics: Sequence[str] = ("recall@1", "map@r"), which: str = "test"
) -> str:
    """Mean +- std (over seeds, in %) per dataset and method, plus the untrained baseline.

    ``which``: ``"test"`` = the checkpoint chosen on validation, ``"last"`` = the last step."""
    prefix = "" if which == "test" else f"{which}_"
    head = " | ".join(f"{METRIC_NAMES.get(m, m)} (%)" for m in metrics)
    lines = [f"| dataset | method | seeds | {head} |", "|---|---|---|" + "---|" * len(metrics)]
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        mine = [r for r in rows if r["dataset"] == dataset]
        base = " | ".join(_fmt(list({r["seed"]: r[f"baseline_{m}"] for r in mine}.values())) for m in metrics)
        lines.append(f"| {dataset} | untrained network | {len(set(r['seed'] for r in mine))} | {base} |")
        for method in dict.fromkeys(r["method"] for r in mine):
            sel = [r for r in mine if r["method"] == method]
            vals = " | ".join(_fmt([r[f"{prefix}{m}"] for r in sel]) for m in metrics)
            lines.append(f"| {dataset} | {method} | {len(sel)} | {vals} |")
    return "\n".join(lines)


def main(
    argv: Sequence[str] | None = None,
    methods: Mapping[str, Mapping[str, Any]] = METHODS,
    title: str = "OSM+CAA",
    metrics: Sequence[str] = ("recall@1", "map@r"),
) -> int:
    parser = argparse.ArgumentParser(description=f"{title} evidence on Olivetti and Omniglot (zero-shot retrieval)")
    parser.add_argument("--quick", action="store_true", help="a few steps and one seed: checks the script runs")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds (default 0 1 2; --quick: 0)")
    parser.add_argument("--datasets", nargs="+", default=["olivetti", "omniglot"], choices=["olivetti", "omniglot"])
    parser.add_argument("--out", type=Path, default=None, help="run folders (default: a temporary folder)")
    parser.add_argument("--data-root", type=Path, default=SHARED_DATA)
    parser.add_argument("--report-only", action="store_true", help="no training: table of the runs finished in --out")
    parser.add_argument("--methods", nargs="+", default=None, choices=list(methods), metavar="METHOD",
                        help=f"only these methods (default: all of {', '.join(map(repr, methods))})")
    args = parser.parse_args(argv)
    if args.methods is not None:
        methods = {name: methods[name] for name in args.methods}
    if not args.data_root.is_dir():
        print(f"data folder {args.data_root} not found; pass --data-root", file=sys.stderr)
        return 2
    seeds = args.seeds if args.seeds is not None else ([0] if args.quick else [0, 1, 2])
    out = args.out if args.out is not None else Path(tempfile.mkdtemp(prefix="deepmetric_evidence_"))
    rows = run_comparison(methods, args.datasets, seeds, args.quick, out, args.data_root, train=not args.report_only)
    out.mkdir(parents=True, exist_ok=True)
    (out / "evidence.json").write_text(json.dumps(rows, indent=2))
    budget = base_config(args.quick)
    print(
        f"\n### {title}: zero-shot retrieval, test classes unseen in training\n\n"
        f"Backbone {budget['model']['backbone']} from scratch (random init), {budget['model']['in_chans']}-channel "
        f"{budget['data']['image_size']} px, {budget['model']['embedding_dim']}-d, P x K = {budget['sampler']['p']} x "
        f"{budget['sampler']['k']}, {budget['trainer']['steps']} steps (AdamW lr {budget['optimizer']['lr']}, cosine), "
        f"validation every {budget['trainer']['eval_every']} steps on classes carved from the training classes; "
        f"test metrics mean +- std over seeds {seeds}.{' QUICK RUN: not evidence.' if args.quick else ''}\n"
    )
    print("Checkpoint chosen on validation MAP@R (the untrained step 0 is a candidate):\n")
    print(markdown_table(rows, metrics))
    print("\nLast step (no selection):\n")
    print(markdown_table(rows, metrics, which="last"))
    print(f"\nrun folders: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
