"""Training step: fit's steady-state step against a plain PyTorch loop over preloaded images.

*fit*: ``deepmetric.training.fit``'s own training loop (``_Run.train``: the P x K sampler, the
DataLoader over per-item seeded items, the dataset's decoding (or the ``data.cache`` pixels) and the
model's training transform, per-step seeding, the learning-rate schedule, forward, loss, backward,
optimizer step, log rows, checkpoints), with deterministic mode as fit sets it; the evaluations fit
runs before and after training are left out (they are not steps). Each step is timed from one
``train_step`` call to the next, so it includes fetching the next batch.

*plain loop*: what a user writes by hand. The training images are decoded once and shrunk to the
cache's size (shorter side 8/7 of the resolution, uint8, in memory); each step draws P classes x K
images, applies the SAME augmentation (the model's training transform: random resized crop,
horizontal flip, normalisation) to each, stacks them and runs forward + loss + backward + AdamW
step; same model, loss (deepmetric's multi-similarity), optimizer, batch, image size and threads,
deterministic mode off (a plain loop does not set it). *plain, flips only* is the loop of the
issue that started this benchmark: 128 px tensors prepared once, only random horizontal flips per
step. It does less work than fit (no random resized crop, no per-item transform at all), so it is
a floor, not a like-for-like reference.

Everything runs in one process, back to back: for each image size every variant runs ``--rounds``
rounds of ``--warm`` + ``--steps`` steps, interleaved, and the table gives the median over rounds
of the mean process CPU time per step (on a shared machine CPU time is far less disturbed than
wall time; loader workers are off, ``num_workers 0``, so CPU time is the whole cost) and the ratio
fit / plain loop per row. Wall time is given too, with the load average.

``--breakdown`` adds where the time of one fit step goes (the profile behind docs/benchmarks.md),
``--caches`` what the cache costs and saves on cars98, RSSCN7 and Omniglot.

Usage::

    python benchmarks/bench_step.py                       # cars98, 64 and 128 px, with the breakdown
    python benchmarks/bench_step.py --threads 2 --rounds 5
    python benchmarks/bench_step.py --quick               # 64 px, few steps
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"

DATASETS: dict[str, dict[str, Any]] = {
    "cars98": {"name": "folder", "root": "cars98", "params": {"test_fraction": 0.5},
               "what": "Stanford Cars classes 1-98 (49 train / 49 test), 320 px JPEG files"},
    "rsscn7": {"name": "folder", "root": "rsscn7", "params": {"test_fraction": 3 / 7},
               "what": "RSSCN7, 256 px JPEG files", "pk": (4, 8)},  # 4 training classes
    "omniglot": {"name": "omniglot", "root": "omniglot-small1/images_background_small1.zip",
                 "params": {"test_fraction": 0.5}, "what": "Omniglot, 105 px PNG in a zip"},
}

Clock = tuple[float, float]  # (process CPU s, wall s)


def clock() -> Clock:
    return time.process_time(), time.perf_counter()


def load() -> str:
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


def make_config(dataset: str, size: int, cache: str, p: int, k: int, cache_dir: str | None = None) -> Any:
    """fit's config of one measurement (multi-similarity, offline EfficientNet-Lite0 -> 128-d, AdamW)."""
    from deepmetric.config import Config

    d = DATASETS[dataset]
    return Config.model_validate({
        "seed": 0,
        "device": "cpu",
        "data": {"name": d["name"], "root": str(DATA / d["root"]), "params": dict(d["params"]), "val_fraction": 0.0,
                 "image_size": size, "num_workers": 0, "cache": cache, "cache_dir": cache_dir},
        "sampler": {"name": "pk", "p": p, "k": k},
        "model": {"backbone": "tf_efficientnet_lite0", "pretrained": "offline", "embedding_dim": 128},
        "loss": {"name": "multi_similarity"},
        "scheduler": {"name": "cosine", "warmup_steps": 0},
        "trainer": {"steps": 10**6, "eval_every": 0, "checkpoint_every": 100, "log_every": 10},
        "eval": {"split": "test", "baseline": False},
    })


class FitSteps:
    """fit's training loop (``_Run.train``) on a real run folder, timed per step, no evaluations."""

    def __init__(self, config: Any, folder: Path) -> None:
        from deepmetric.training.fit import _Run

        t0 = time.perf_counter()
        self.run = _Run(config, folder, resume=False, progress=False)
        self.setup_s = time.perf_counter() - t0
        self.run.paths.checkpoints.mkdir(parents=True, exist_ok=True)
        self.stamps: list[Clock] = []
        step = self.run.train_step

        def timed(inputs: Any, labels: Any) -> Any:
            self.stamps.append(clock())
            return step(inputs, labels)

        self.run.train_step = timed  # type: ignore[method-assign]

    def steps(self, n: int) -> list[Clock]:
        """(CPU s, wall s) of ``n`` consecutive steps (``train_step`` entry to the next entry)."""
        from deepmetric.training.interrupt import Interrupt

        previous = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(self.run.config.deterministic, warn_only=True)
        self.stamps = []
        self.run.total_steps = self.run.step + n + 1
        try:
            with Interrupt() as interrupt:
                self.run.train(interrupt)
        finally:
            torch.use_deterministic_algorithms(previous, warn_only=True)
        return [(b[0] - a[0], b[1] - a[1]) for a, b in zip(self.stamps, self.stamps[1:])]


class PlainLoop:
    """A hand-written loop over images decoded once into memory (see the module docstring)."""

    def __init__(self, config: Any, paths: Sequence[str], labels: Sequence[int], side: int,
                 flips_only: bool = False) -> None:
        import torchvision.transforms.functional as F
        from PIL import Image
        from torchvision import transforms as T

        from deepmetric.training.builders import build_loss_from_config, build_model
        from deepmetric.training.optim import build_optimizer

        torch.manual_seed(1)
        self.model = build_model(config)
        self.loss = build_loss_from_config(config.loss, len(set(labels)), self.model.embedding_dim)
        self.optimizer = build_optimizer(self.model, self.loss, config.optimizer)
        self.p, self.k = config.sampler.p, config.sampler.k
        self.labels = np.asarray(labels)
        self.members = {c: np.flatnonzero(self.labels == c) for c in np.unique(self.labels)}
        self.rng = np.random.default_rng(0)
        self.flips_only = flips_only
        arrays = []
        for path in paths:  # decoded and shrunk once, like the cache: not timed
            with Image.open(path) as image:
                arrays.append(np.asarray(F.resize(image.convert("RGB"), side, T.InterpolationMode.BICUBIC)))
        if flips_only:
            prepare = self.model.eval_transform()  # resize + center crop to the training size, normalise
            self.tensors = torch.stack([prepare(Image.fromarray(a)) for a in arrays])
        else:
            self.arrays = arrays
            self.augment = self.model.train_transform()
            self.image = Image.fromarray

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        classes = self.rng.choice(list(self.members), self.p, replace=False)
        index = np.concatenate([self.rng.choice(self.members[c], self.k, replace=len(self.members[c]) < self.k)
                                for c in classes])
        labels = torch.as_tensor(self.labels[index])
        if self.flips_only:
            x = self.tensors[torch.as_tensor(index)]
            flip = torch.rand(len(index)) < 0.5
            return torch.where(flip[:, None, None, None], x.flip(3), x), labels
        return torch.stack([self.augment(self.image(self.arrays[i])) for i in index]), labels

    def steps(self, n: int) -> list[Clock]:
        out = []
        for _ in range(n):
            c0 = clock()
            x, y = self.batch()
            self.model.train()
            self.optimizer.zero_grad(set_to_none=True)
            self.loss(self.model(x), y).backward()
            self.optimizer.step()
            c1 = clock()
            out.append((c1[0] - c0[0], c1[1] - c0[1]))
        return out


def measure(variants: dict[str, Any], rounds: int, warm: int, steps: int) -> dict[str, tuple[float, float]]:
    """Median over rounds of the mean (CPU s, wall s) per step of every variant, interleaved."""
    per_round: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, runner in variants.items():
            runner.steps(warm)
            times = runner.steps(steps)
            per_round[name].append((statistics.fmean(t[0] for t in times), statistics.fmean(t[1] for t in times)))
    return {name: (statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows))
            for name, rows in per_round.items()}


def step_table(args: argparse.Namespace, work: Path) -> None:
    from deepmetric.data.cache import default_cache_size

    print(f"### fit's step vs a plain loop ({args.dataset}, batch P x K = {args.p} x {args.k})\n")
    print(f"{DATASETS[args.dataset]['what']}; offline EfficientNet-Lite0 -> 128-d, multi-similarity, AdamW, "
          f"torch.set_num_threads({args.threads}), num_workers 0, OMP_WAIT_POLICY="
          f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}, torch {torch.__version__}, cpu; {args.rounds} rounds of "
          f"{args.warm} + {args.steps} steps per variant, interleaved; median over rounds of the mean per step. "
          f"Load average at start: {load()}.\n")
    rows = []
    for size in args.sizes:
        config = {cache: make_config(args.dataset, size, cache, args.p, args.k) for cache in ("none", "memory")}
        fits = {cache: FitSteps(config[cache], work / f"fit-{size}-{cache}") for cache in config}
        train = fits["none"].run.splits.train
        side = default_cache_size(size)
        variants: dict[str, Any] = {
            "fit, cache none": fits["none"],
            "fit, cache memory": fits["memory"],
            "plain": PlainLoop(config["none"], train.paths, train.labels, side),
            "plain, flips only": PlainLoop(config["none"], train.paths, train.labels, side, flips_only=True),
        }
        result = measure(variants, args.rounds, args.warm, args.steps)
        rows.append((size, result, fits["memory"].run))
    head = ("| px | data.cache | fit CPU s/step | plain loop CPU s/step | **fit / plain** | plain, flips only CPU s/step "
            "| fit / flips only | fit wall s/step | plain wall s/step |")
    print(head)
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for size, result, _ in rows:
        plain, flips = result["plain"], result["plain, flips only"]
        for cache in ("none", "memory"):
            fit = result[f"fit, cache {cache}"]
            print(f"| {size} | {cache} | {fit[0]:.3f} | {plain[0]:.3f} | **{fit[0] / plain[0]:.2f}** | {flips[0]:.3f} "
                  f"| {fit[0] / flips[0]:.2f} | {fit[1]:.3f} | {plain[1]:.3f} |")
    print(f"\nLoad average at end: {load()}.")
    from deepmetric.data.cache import cache_of

    for size, _, run in rows:
        cache = cache_of(run.splits.train)
        if cache is not None:
            print(f"* {size} px: {cache.describe()} (training and test images; the test split reads it too)")


def _cpu_ms(fn: Callable[[], Any], repeats: int) -> float:
    c0 = time.process_time()
    for _ in range(repeats):
        fn()
    return (time.process_time() - c0) / repeats * 1e3


def breakdown(args: argparse.Namespace, work: Path) -> None:
    """Where one fit step's CPU time goes, component by component, on the same batch."""
    import torch.utils.deterministic as deterministic
    from torch.utils.data import DataLoader

    from deepmetric.training.builders import build_loss_from_config, build_model
    from deepmetric.training.optim import build_optimizer
    from deepmetric.training.seed import derive_seed
    from deepmetric.training.views import SeededItems

    size = max(args.sizes)
    print(f"\n### Where the time of one fit step goes ({args.dataset}, {size} px, batch {args.p * args.k})\n")
    print(f"Process CPU ms per step (one batch of {args.p * args.k} images), torch.set_num_threads({args.threads}); "
          f"load average at start: {load()}. Compute rows: median of {args.rounds} repeats of 3 steps.\n")
    batch = args.p * args.k
    fits = {cache: FitSteps(make_config(args.dataset, size, cache, args.p, args.k), work / f"bd-{cache}")
            for cache in ("none", "memory")}
    items = {cache: SeededItems(f.run.splits.train) for cache, f in fits.items()}
    keyed = [(i * 37 % len(items["none"]), derive_seed(0, "item", 0, 0, i)) for i in range(batch)]
    rows: list[tuple[str, float]] = []
    rows.append(("decode + training transform, 32 items (no cache)", _cpu_ms(lambda: [items["none"][k] for k in keyed], 3)))
    rows.append(("cached pixels + training transform, 32 items (cache memory)",
                 _cpu_ms(lambda: [items["memory"][k] for k in keyed], 3)))

    def seed_items(all_devices: bool) -> None:
        for _, s in keyed:
            (torch.manual_seed if all_devices else torch.default_generator.manual_seed)(s)
            np.random.seed(s % 2**32)
            random.seed(s)

    rows.append(("per-item seeding before (torch.manual_seed + numpy + random)", _cpu_ms(lambda: seed_items(True), 20)))
    rows.append(("per-item seeding now (CPU generator + numpy + random)", _cpu_ms(lambda: seed_items(False), 20)))
    loader = DataLoader(items["memory"], batch_sampler=[keyed], num_workers=0)
    direct = _cpu_ms(lambda: [items["memory"][k] for k in keyed], 3)
    rows.append(("DataLoader + collate on top of the cached items", _cpu_ms(lambda: next(iter(loader)), 3) - direct))

    run = fits["memory"].run
    x, y = next(iter(loader))
    model = build_model(run.config)
    loss = build_loss_from_config(run.config.loss, run.splits.num_classes, model.embedding_dim)
    optimizer = build_optimizer(model, loss, run.config.optimizer)

    def plain_step() -> None:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        loss(model(x), y).backward()
        optimizer.step()

    def fit_step() -> None:
        run.train_step(x, y)
        run.step += 1

    modes = {
        "compute: forward + loss + backward + AdamW, deterministic off": (plain_step, False, False),
        "compute, deterministic on, NaN-filling new tensors (before)": (plain_step, True, True),
        "compute, deterministic on, no NaN fill (now)": (plain_step, True, False),
        "fit's train_step (seeding, schedule, checks), deterministic as now": (fit_step, True, False),
    }
    times: dict[str, list[float]] = {name: [] for name in modes}
    fill = deterministic.fill_uninitialized_memory
    for _ in range(args.rounds):
        for name, (fn, det, nan_fill) in modes.items():
            torch.use_deterministic_algorithms(det, warn_only=True)
            deterministic.fill_uninitialized_memory = nan_fill
            fn()
            times[name].append(_cpu_ms(fn, 3))
    torch.use_deterministic_algorithms(False)
    deterministic.fill_uninitialized_memory = fill
    compute = {name: statistics.median(v) for name, v in times.items()}
    rows += list(compute.items())
    t0 = time.process_time()
    run.save_last()
    rows.append((f"checkpoint (last.pt) every {run.config.trainer.checkpoint_every} steps, per step",
                 (time.process_time() - t0) * 1e3 / run.config.trainer.checkpoint_every))
    base = compute["compute: forward + loss + backward + AdamW, deterministic off"]
    print("| component | CPU ms per step | share of the plain compute |")
    print("|---|---:|---:|")
    for name, ms in rows:
        print(f"| {name} | {ms:.1f} | {100 * ms / base:.1f}% |")
    print(f"\nLoad average at end: {load()}.")


def cache_table(args: argparse.Namespace, work: Path) -> None:
    """Cache size, build time (memory; disk built and reused) and per-batch data cost per dataset."""
    from deepmetric.data.cache import cache_of
    from deepmetric.training.builders import build_datasets, build_model
    from deepmetric.training.views import SeededItems
    from deepmetric.training.seed import derive_seed

    size = max(args.sizes)
    print(f"\n### The cache on three datasets ({size} px, default cache size {round(size * 8 / 7)} px)\n")
    print(f"Load average at start: {load()}. Data cost = process CPU ms to make one batch of 32 training items "
          "(per-item seeding, decode or cached pixels, training transform), median of 3.\n")
    print("| dataset | images cached | cache MiB | memory: build s | disk: build s | disk: reuse s "
          "| no cache ms/batch | cached ms/batch | saved ms/batch |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for dataset in args.cache_datasets:
        p, k = DATASETS[dataset].get("pk", (args.p, args.k))
        cached: dict[str, Any] = {}
        for cache in ("none", "memory", "disk", "disk "):
            config = make_config(dataset, size, cache.strip(), p, k, cache_dir=str(work / f"disk-{dataset}"))
            model = build_model(config)
            cached[cache] = build_datasets(config, model, cache=cache != "none")
        train = {c: SeededItems(s.train) for c, s in cached.items()}
        keyed = [(i * 37 % len(train["none"]), derive_seed(0, "item", 0, 0, i)) for i in range(32)]
        cost = {c: statistics.median(_cpu_ms(lambda c=c: [train[c][key] for key in keyed], 1) for _ in range(3))
                for c in ("none", "memory")}
        memory, disk, reuse = (cache_of(cached[c].train) for c in ("memory", "disk", "disk "))
        assert memory is not None and disk is not None and reuse is not None and not reuse.built
        print(f"| {dataset} | {len(memory)} | {memory.nbytes / 2**20:.0f} | {memory.seconds:.1f} | {disk.seconds:.1f} "
              f"| {reuse.seconds:.2f} | {cost['none']:.1f} | {cost['memory']:.1f} | {cost['none'] - cost['memory']:.1f} |")
    print(f"\nLoad average at end: {load()}.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="64 px only, 1 round of 1 + 3 steps, no breakdown")
    ap.add_argument("--dataset", default="cars98", choices=list(DATASETS))
    ap.add_argument("--sizes", nargs="+", type=int, default=[64, 128])
    ap.add_argument("--steps", type=int, default=8, help="timed steps per round and variant")
    ap.add_argument("--warm", type=int, default=2, help="untimed steps before each round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--p", type=int, default=8)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-steps", action="store_true", help="skip the fit-vs-plain table")
    ap.add_argument("--no-breakdown", action="store_true")
    ap.add_argument("--no-caches", action="store_true")
    ap.add_argument("--cache-datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    args = ap.parse_args()
    if args.quick:
        args.sizes, args.rounds, args.warm, args.steps = [64], 1, 1, 3
        args.no_breakdown, args.cache_datasets = True, ["omniglot"]
    torch.set_num_threads(args.threads)
    if not (DATA / DATASETS[args.dataset]["root"]).exists():
        print(f"no data at {DATA}; nothing to run")
        return
    print(f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores; torch threads {torch.get_num_threads()}.\n")
    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_steps:
            step_table(args, Path(tmp))
        if not args.no_breakdown:
            breakdown(args, Path(tmp))
        if not args.no_caches:
            cache_table(args, Path(tmp))


if __name__ == "__main__":
    main()
