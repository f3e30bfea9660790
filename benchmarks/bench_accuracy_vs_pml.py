"""Accuracy side by side: deepmetric's trainer vs pytorch-metric-learning's (PML), same budget.

For each (loss, dataset, seed) the SAME network (deepmetric's offline-pretrained EfficientNet-Lite0
embedder, built by ``deepmetric.training.builders.build_model`` from one config, so both runs
start from identical weights), the SAME data splits and transforms, the same P x K batch layout,
image size, optimizer (AdamW, same parameter groups and learning rates, constant learning rate)
and number of optimizer steps are trained twice:

* **deepmetric**: ``deepmetric.training.fit(config)`` (its P x K sampler, its loss);
* **PML**: ``pytorch_metric_learning.trainers.MetricLossOnly`` with PML's loss (and PML's miner
  where the method mines), PML's ``MPerClassSampler`` (m = K, batch = P x K).

Both final networks (the last step; no checkpoint selection) are scored on the held-out test
classes by ``deepmetric.evaluation.evaluate_embeddings`` (leave-one-out retrieval: Recall@1,
MAP@R): deepmetric's by ``fit``'s own final test evaluation (same eval transform, same function),
PML's by embedding the test split here. Wall time is the training time of each library:
``fit``'s wall time minus the time it spent in its evaluations (it still includes fit's set-up:
model and dataset building, run folder, checkpoints), and PML's ``trainer.train()`` alone (built
beforehand), so the wall columns favour PML by the set-up time.

Datasets (../shared/data; zero-shot: train and test classes are disjoint):
Olivetti faces (20 / 20 people), Omniglot (half of the characters unseen), RSSCN7 scenes
(4 train / 3 test classes).

Usage::

    python benchmarks/bench_accuracy_vs_pml.py           # 3 losses x 3 datasets x 3 seeds
    python benchmarks/bench_accuracy_vs_pml.py --quick   # 1 seed, Olivetti, 20 steps
    python benchmarks/bench_accuracy_vs_pml.py --datasets olivetti --seeds 0 --steps 100

pytorch-metric-learning is used only here; the library never imports it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

#: our loss (registry name, kwargs) and PML's counterpart (loss, miner) per method; the pairs are
#: the ones benchmarks/bench_losses.py checks to give the same values on the same batch
LOSSES: dict[str, dict[str, Any]] = {
    "contrastive": {"ours": ("contrastive", {"reduction": "mean_active"}), "pml": "ContrastiveLoss()", "miner": None},
    "triplet": {
        "ours": ("triplet", {"mining": "all", "margin": 0.2, "reduction": "mean_active"}),
        "pml": "TripletMarginLoss(margin=0.2)",
        "miner": None,
    },
    "multi_similarity": {
        "ours": ("multi_similarity", {}),
        "pml": "MultiSimilarityLoss()",
        "miner": "MultiSimilarityMiner(epsilon=0.1)",
    },
}

DATASETS: dict[str, dict[str, Any]] = {
    "olivetti": {"name": "olivetti", "root": "olivetti/olivetti.npz", "params": {"test_fraction": 0.5}},
    "omniglot": {"name": "omniglot", "root": "omniglot-small1/images_background_small1.zip",
                 "params": {"test_fraction": 0.5}},
    # only 4 training classes: P x K = 4 x 8 keeps the batch at 32 images
    "rsscn7": {"name": "folder", "root": "rsscn7", "params": {"test_fraction": 3 / 7}, "pk": (4, 8)},
}


@dataclass(frozen=True)
class Budget:
    """What both libraries share in one comparison."""

    steps: int
    p: int
    k: int
    image_size: int
    lr: float
    seed: int

    @property
    def batch_size(self) -> int:
        return self.p * self.k

    @property
    def images_seen(self) -> int:
        return self.steps * self.batch_size


def build_configs(loss: str, dataset: str, budget: Budget, data_dir: Path = DATA) -> tuple[Any, dict[str, Any]]:
    """The deepmetric ``Config`` and the PML settings of one comparison, from one ``budget``.

    Pure (builds objects, trains nothing). The PML settings carry exactly the budget the config
    encodes: steps (= PML iterations), batch size P x K, m = K per class, image size, learning
    rate, seed.
    """
    from deepmetric.config import Config

    if loss not in LOSSES:
        raise ValueError(f"unknown loss '{loss}'; choose from {', '.join(LOSSES)}")
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset '{dataset}'; choose from {', '.join(DATASETS)}")
    name, kwargs = LOSSES[loss]["ours"]
    d = DATASETS[dataset]
    config = Config.model_validate({
        "seed": budget.seed,
        "device": "cpu",
        "data": {"name": d["name"], "root": str(data_dir / d["root"]), "params": dict(d["params"]),
                 "val_fraction": 0.0, "image_size": budget.image_size, "num_workers": 0},
        "sampler": {"name": "pk", "p": budget.p, "k": budget.k},
        "model": {"backbone": "tf_efficientnet_lite0", "pretrained": "offline", "embedding_dim": 128},
        "loss": {"name": name, "params": dict(kwargs)},
        "optimizer": {"name": "adamw", "lr": budget.lr},
        "scheduler": {"name": "none", "warmup_steps": 0},
        "trainer": {"steps": budget.steps, "eval_every": 0, "checkpoint_every": budget.steps,
                    "log_every": max(1, budget.steps // 5)},
        "eval": {"split": "test", "baseline": False, "select_metric": "map@r", "metrics": ["recall@k", "map@r"],
                 "k_values": [1]},
    })
    pml = {
        "loss": LOSSES[loss]["pml"],
        "miner": LOSSES[loss]["miner"],
        "iterations": config.trainer.steps,
        "batch_size": config.sampler.p * config.sampler.k,
        "m_per_class": config.sampler.k,
        "image_size": config.data.image_size,
        "lr": config.optimizer.lr,
        "seed": config.seed,
    }
    return config, pml


def _score(model: torch.nn.Module, test: Any) -> dict[str, float]:
    from deepmetric.evaluation import evaluate_embeddings
    from deepmetric.training.embed import embed

    emb, labels = embed(model, test, batch_size=128)
    m = evaluate_embeddings(emb, labels, metrics=("recall@k", "map@r"), k_values=(1,))
    return {"recall@1": float(m["recall@1"]), "map@r": float(m["map@r"])}


def run_deepmetric(config: Any) -> dict[str, float]:
    """Train with ``fit``; report the LAST step's test metrics (as for PML) from fit's summary.

    Wall time is fit's minus the time it spent in its evaluations (timed by wrapping the run's
    ``evaluate``), so set-up (model, datasets, run folder, checkpoints) stays in.
    """
    import importlib

    from deepmetric.training import fit

    fit_module = importlib.import_module("deepmetric.training.fit")
    original = fit_module._Run.evaluate
    spent = [0.0]

    def timed_evaluate(self: Any, dataset: Any, split: str) -> Any:
        t = time.perf_counter()
        try:
            return original(self, dataset, split)
        finally:
            spent[0] += time.perf_counter() - t

    fit_module._Run.evaluate = timed_evaluate
    try:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            summary = fit(config, Path(tmp) / "run", progress=False, report=False)
            wall = time.perf_counter() - t0
    finally:
        fit_module._Run.evaluate = original
    # "test" is the best checkpoint's; when that is not the last step, "test_last" is the last's
    last = summary.get("test_last") or summary["test"]
    return {"recall@1": float(last["recall@1"]), "map@r": float(last["map@r"]), "wall_s": wall - spent[0]}


def run_pml(config: Any, pml: dict[str, Any]) -> dict[str, float]:
    """Train the same network with PML's MetricLossOnly trainer, loss, miner and sampler."""
    from pytorch_metric_learning import losses as pml_losses
    from pytorch_metric_learning import miners as pml_miners
    from pytorch_metric_learning.samplers import MPerClassSampler
    from pytorch_metric_learning.trainers import MetricLossOnly

    from deepmetric.training.builders import build_datasets, build_loss_from_config, build_model
    from deepmetric.training.optim import build_optimizer
    from deepmetric.training.seed import seed_everything

    seed_everything(pml["seed"])
    model = build_model(config)
    splits = build_datasets(config, model)
    train = splits.train
    labels = [int(y) for y in train.labels]
    loss_fn = eval(pml["loss"], vars(pml_losses))  # noqa: S307 - fixed strings from LOSSES
    mining = {"tuple_miner": eval(pml["miner"], vars(pml_miners))} if pml["miner"] else {}  # noqa: S307
    # same parameter groups and learning rates as deepmetric's optimizer (our loss has no params)
    ours_loss = build_loss_from_config(config.loss, len(set(labels)), model.embedding_dim)
    optimizer = build_optimizer(model, ours_loss, config.optimizer)
    sampler = MPerClassSampler(labels, m=pml["m_per_class"], batch_size=pml["batch_size"],
                               length_before_new_iter=pml["iterations"] * pml["batch_size"])
    trainer = MetricLossOnly(
        models={"trunk": model}, optimizers={"trunk_optimizer": optimizer}, batch_size=pml["batch_size"],
        loss_funcs={"metric_loss": loss_fn}, mining_funcs=mining, dataset=train, sampler=sampler,
        iterations_per_epoch=pml["iterations"], dataloader_num_workers=0, dataset_labels=labels,
        data_and_label_getter=lambda batch: (batch[0], batch[1]), data_device=torch.device("cpu"),
    )
    t0 = time.perf_counter()
    trainer.train(num_epochs=1)
    wall = time.perf_counter() - t0
    return {**_score(model, splits.test), "wall_s": wall}


def _fmt(values: list[float], digits: int = 3) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 seed, Olivetti, 20 steps")
    ap.add_argument("--losses", nargs="+", default=list(LOSSES), choices=list(LOSSES))
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--p", type=int, default=8)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    if args.quick:
        args.seeds, args.datasets, args.steps = [0], ["olivetti"], 20
    torch.set_num_threads(args.threads)
    if not DATA.is_dir():
        print(f"no data at {DATA}; nothing to run")
        return
    import pytorch_metric_learning

    t_all = time.perf_counter()
    rows: list[tuple[str, str, dict[str, list[float]], dict[str, list[float]]]] = []
    for dataset in args.datasets:
        for loss in args.losses:
            res: dict[str, dict[str, list[float]]] = {"ours": {}, "pml": {}}
            for seed in args.seeds:
                p, k = DATASETS[dataset].get("pk", (args.p, args.k))
                budget = Budget(args.steps, p, k, args.image_size, args.lr, seed)
                config, pml = build_configs(loss, dataset, budget)
                for lib, out in (("ours", run_deepmetric(config)), ("pml", run_pml(config, pml))):
                    for key, v in out.items():
                        res[lib].setdefault(key, []).append(v)
                print(f"[{dataset} {loss} seed {seed}] ours R@1 {res['ours']['recall@1'][-1]:.3f} "
                      f"MAP@R {res['ours']['map@r'][-1]:.3f} | PML R@1 {res['pml']['recall@1'][-1]:.3f} "
                      f"MAP@R {res['pml']['map@r'][-1]:.3f}", file=sys.stderr, flush=True)
            rows.append((dataset, loss, res["ours"], res["pml"]))
    total = time.perf_counter() - t_all

    print(f"Setting: {len(args.seeds)} seed(s) {args.seeds}, {args.steps} steps, P x K = {args.p} x {args.k} "
          f"(rsscn7, which has 4 training classes: 4 x 8), "
          f"image {args.image_size} px, AdamW lr {args.lr} (backbone x0.1), constant lr, {args.threads} thread(s), "
          f"num_workers 0, pytorch-metric-learning {pytorch_metric_learning.__version__}, torch {torch.__version__}; "
          f"trainer for PML: MetricLossOnly; mean ± std over seeds; total {total:.0f} s. Wall: deepmetric = fit's time "
          f"minus the time it spent evaluating, so it still includes fit's set-up (building model and datasets, run "
          f"folder, checkpoints); PML = trainer.train() only (model and datasets built before).\n")
    print("| dataset | loss | deepmetric R@1 | PML R@1 | deepmetric MAP@R | PML MAP@R | deepmetric wall (s) | PML wall (s) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for dataset, loss, ours, pml in rows:
        print(f"| {dataset} | {loss} | {_fmt(ours['recall@1'])} | {_fmt(pml['recall@1'])} | {_fmt(ours['map@r'])} | "
              f"{_fmt(pml['map@r'])} | {_fmt(ours['wall_s'], 1)} | {_fmt(pml['wall_s'], 1)} |")


if __name__ == "__main__":
    main()
