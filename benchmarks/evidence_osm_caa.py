"""Evidence for OSM+CAA (Wang et al., AAAI 2019, arXiv 1811.01459) on real data.

Compares, with the same backbone, batches and training budget, on zero-shot retrieval (test
classes never seen in training):

* plain contrastive (the same loss with every weight 1: ``use_osm=False, use_caa=False``),
* OSM only, OSM + cross-entropy (isolates the classifier's own effect), OSM + CAA (+ CE).

Datasets (from ``../shared/data``): Olivetti faces (20 people train / 20 unseen people test) and
Omniglot small1 (half the characters train, the other half unseen test). Every run goes through
``deepmetric.training.fit`` (validation split carved from the training classes, checkpoint
chosen on it); reported are test Recall@1 and MAP@R of that checkpoint, mean +- std over seeds,
next to the untrained (pretrained-features) baseline.

    python benchmarks/evidence_osm_caa.py                 # 3 seeds, full budget
    python benchmarks/evidence_osm_caa.py --quick         # a few steps: checks that it runs
    python benchmarks/evidence_osm_caa.py --out runs/ev   # keep run folders (finished runs are reused)

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
    "OSM + CE": {"name": "osm_caa", "params": {"use_caa": False, "ce_weight": 1.0}},
    "OSM + CAA (+ CE)": {"name": "osm_caa", "params": {"use_caa": True, "ce_weight": 1.0}},
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


def base_config(quick: bool) -> dict[str, Any]:
    """Everything but data and loss: one backbone and one budget for every method."""
    return {
        "data": {"image_size": 32 if quick else 64, "num_workers": 0},
        "sampler": {"p": 8, "k": 5},
        "model": {"backbone": "tf_efficientnet_lite0", "pretrained": "offline", "embedding_dim": 128},
        "optimizer": {"name": "adamw", "lr": 1e-3, "backbone_lr_mult": 0.1},
        "scheduler": {"name": "cosine", "warmup_steps": 2 if quick else 50},
        "trainer": {
            "steps": 3 if quick else 600,
            "eval_every": 0 if quick else 100,
            "checkpoint_every": 1000,
            "log_every": 10,
        },
        "eval": {"split": "val", "select_metric": "map@r", "k_values": [1, 2, 4, 8], "batch_size": 64},
    }


def _merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        out[key] = _merge(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) else value
    return out


def run_one(config_dict: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Train one configuration (or reuse a finished run folder) and return its metrics summary."""
    from deepmetric.config import load_config
    from deepmetric.training import fit

    metrics_file = run_dir / "metrics.json"
    if metrics_file.is_file():
        summary = json.loads(metrics_file.read_text())
        if summary.get("test"):
            return summary
    return fit(load_config(config_dict), run_dir, progress=False)


def run_comparison(
    methods: Mapping[str, Mapping[str, Any]],
    datasets: Sequence[str],
    seeds: Sequence[int],
    quick: bool,
    out_dir: Path,
    data_root: Path = SHARED_DATA,
) -> list[dict[str, Any]]:
    """Every (dataset, method, seed) run; returns one row per run."""
    sections = dataset_sections(data_root)
    rows = []
    for dataset in datasets:
        for method, loss in methods.items():
            for seed in seeds:
                config = _merge(base_config(quick), {"seed": seed, "data": sections[dataset], "loss": dict(loss)})
                slug = "".join(c if c.isalnum() else "_" for c in method).strip("_")
                summary = run_one(config, out_dir / dataset / slug / f"seed{seed}")
                baseline = (summary.get("baseline") or {}).get("metrics") or {}
                rows.append(
                    {
                        "dataset": dataset,
                        "method": method,
                        "seed": seed,
                        "recall@1": summary["test"]["recall@1"],
                        "map@r": summary["test"]["map@r"],
                        "baseline_recall@1": baseline.get("recall@1"),
                        "baseline_map@r": baseline.get("map@r"),
                        "test_step": summary.get("test_step"),
                    }
                )
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


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Mean +- std (over seeds, in %) per dataset and method, plus the untrained baseline."""
    lines = [
        "| dataset | method | seeds | Recall@1 (%) | MAP@R (%) |",
        "|---|---|---|---|---|",
    ]
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        mine = [r for r in rows if r["dataset"] == dataset]
        lines.append(
            f"| {dataset} | untrained (pretrained features) | {len(set(r['seed'] for r in mine))} | "
            f"{_fmt(list({r['seed']: r['baseline_recall@1'] for r in mine}.values()))} | "
            f"{_fmt(list({r['seed']: r['baseline_map@r'] for r in mine}.values()))} |"
        )
        for method in dict.fromkeys(r["method"] for r in mine):
            sel = [r for r in mine if r["method"] == method]
            lines.append(
                f"| {dataset} | {method} | {len(sel)} | {_fmt([r['recall@1'] for r in sel])} | "
                f"{_fmt([r['map@r'] for r in sel])} |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None, methods: Mapping[str, Mapping[str, Any]] = METHODS, title: str = "OSM+CAA") -> int:
    parser = argparse.ArgumentParser(description=f"{title} evidence on Olivetti and Omniglot (zero-shot retrieval)")
    parser.add_argument("--quick", action="store_true", help="a few steps and one seed: checks the script runs")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds (default 0 1 2; --quick: 0)")
    parser.add_argument("--datasets", nargs="+", default=["olivetti", "omniglot"], choices=["olivetti", "omniglot"])
    parser.add_argument("--out", type=Path, default=None, help="run folders (default: a temporary folder)")
    parser.add_argument("--data-root", type=Path, default=SHARED_DATA)
    args = parser.parse_args(argv)
    if not args.data_root.is_dir():
        print(f"data folder {args.data_root} not found; pass --data-root", file=sys.stderr)
        return 2
    seeds = args.seeds if args.seeds is not None else ([0] if args.quick else [0, 1, 2])
    out = args.out if args.out is not None else Path(tempfile.mkdtemp(prefix="deepmetric_evidence_"))
    rows = run_comparison(methods, args.datasets, seeds, args.quick, out, args.data_root)
    (out / "evidence.json").write_text(json.dumps(rows, indent=2))
    budget = base_config(args.quick)
    print(
        f"\n### {title}: zero-shot retrieval, test classes unseen in training\n\n"
        f"Backbone {budget['model']['backbone']} (offline ImageNet weights), {budget['data']['image_size']} px, "
        f"{budget['model']['embedding_dim']}-d, P x K = {budget['sampler']['p']} x {budget['sampler']['k']}, "
        f"{budget['trainer']['steps']} steps, checkpoint chosen on a validation split of the training classes "
        f"(MAP@R); test metrics mean +- std over seeds {seeds}.{' QUICK RUN: not evidence.' if args.quick else ''}\n"
    )
    print(markdown_table(rows))
    print(f"\nrun folders: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
