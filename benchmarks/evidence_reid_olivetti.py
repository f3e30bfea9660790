"""Evidence for the video re-ID pipeline on tracklets made from real face photos (Olivetti).

No re-ID data set is available offline, so this builds a small two-camera video re-ID problem
from the Olivetti faces (40 people x 10 photos, 64 x 64 grey; ../shared/data/olivetti):

* identities = people; 20 people train, the 20 others are unseen test identities (fixed split);
* each person's photos 0-4 and 5-9 form two 5-frame tracklets; every frame is additionally
  augmented in the style of its "camera": camera 0 mild (small crop, brightness), camera 1
  strong (blur, low contrast, colour tint, mirror, larger crop). Training people get both
  tracklets in both cameras (4 tracklets each, so P x K = 8 x 4 batches work);
* test: query = the camera-0 tracklets (photos 0-4); gallery = the camera-1 tracklets
  (photos 5-9) PLUS every camera-0 test tracklet, i.e. also an exact copy of each query, which
  the same-identity-same-camera rule must exclude, and other people's camera-0 tracklets as
  same-style distractors.

Every run trains through :func:`deepmetric.training.fit` (the one trainer): ``data.name``
``olivetti_tracklets`` (registered here, built with
:func:`deepmetric.data.reid_datasets.tracklet_split_dataset`), ``model.name: tracklet`` (offline
ImageNet EfficientNet-Lite0 frames, 48 x 48, T = 4 of the 5 frames per training clip), frame +
tracklet OSM+CAA losses (``loss.heads``), AdamW, ``eval.protocol: reid``. 20 % of the training
people (4) are held out for validation; the checkpoint is chosen on their MAP@R (every 10
steps, step 0 included) and the test split is only used for the reported numbers. ``mean`` vs
``attention`` temporal pooling, 3 seeds each; printed: CMC-1/5 and mAP (mean +- std over seeds)
of the untrained network (pretrained backbone, random head), of the checkpoint chosen on
validation and of the last step. ``--no-validation`` is a diagnostic that repeats the earlier
protocol (all 20 training people train, the last step is reported, no checkpoint is selected).

    python benchmarks/evidence_reid_olivetti.py [--quick] [--steps N] [--seeds 0 1 2] [--jobs 2] [--json OUT]
    python benchmarks/evidence_reid_olivetti.py --no-validation   # the earlier protocol, for comparison
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from deepmetric.data.reid_datasets import tracklet_split_dataset
from deepmetric.data.tracklets import Tracklet, TrackletDataset

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "olivetti" / "olivetti.npz"
DATASET_NAME = "olivetti_tracklets"

#: the run configuration (the one config schema); the script sets seed, temporal and steps
BASE: dict[str, Any] = {
    "device": "cpu",
    "data": {"name": DATASET_NAME, "params": {"seq_len": 4, "height": 48, "width": 48, "hflip": 0.5, "pad": 3},
             "val_fraction": 0.2, "val_by": "classes", "num_workers": 0},
    "sampler": {"p": 8, "k": 4},
    "model": {"name": "tracklet", "backbone": "tf_efficientnet_lite0", "pretrained": "offline",
              "embedding_dim": 128, "freeze_bn": True, "params": {"temporal": "attention"}},
    "loss": {"name": "osm_caa", "params": {"alpha": 1.2, "sigma": 0.8, "lam": 0.5, "ce_weight": 1.0},
             "heads": {"frame": 1.0, "tracklet": 1.0}},
    "optimizer": {"name": "adamw", "lr": 1e-3, "weight_decay": 1e-4, "backbone_lr_mult": 0.1},
    "scheduler": {"name": "cosine", "warmup_steps": 10},
    "trainer": {"steps": 40, "eval_every": 10, "checkpoint_every": 40, "log_every": 10},
    "eval": {"protocol": "reid", "split": "val", "select_metric": "map@r", "metric": "euclidean",
             "k_values": [1, 5, 10], "baseline": True, "batch_size": 16},
}


def camera_style(img: np.ndarray, camera: int, rng: np.random.Generator) -> np.ndarray:
    """One frame as seen by ``camera`` (RGB uint8, 64 x 64): 0 mild, 1 strong augmentation."""
    pil = Image.fromarray(img).convert("RGB")
    size = pil.size[0]
    if camera == 0:
        side = int(rng.integers(56, 65))
        brightness = rng.uniform(0.9, 1.1)
    else:
        side = int(rng.integers(48, 61))
        brightness = rng.uniform(0.8, 1.2)
    x, y = (int(rng.integers(0, size - side + 1)) for _ in range(2))
    pil = pil.crop((x, y, x + side, y + side)).resize((size, size), Image.BILINEAR)
    pil = ImageEnhance.Brightness(pil).enhance(brightness)
    if camera == 1:
        pil = pil.filter(ImageFilter.GaussianBlur(rng.uniform(0.6, 1.5)))
        pil = ImageEnhance.Contrast(pil).enhance(rng.uniform(0.5, 0.8))
        gains = np.array([1.15, 0.95, 0.75]) * rng.uniform(0.95, 1.05, size=3)
        pil = Image.fromarray(np.clip(np.asarray(pil, dtype=float) * gains, 0, 255).astype(np.uint8))
        pil = ImageOps.mirror(pil)
    return np.asarray(pil)


def olivetti_tracklets(
    path: Path = DATA, n_people: int = 40, seed: int = 0
) -> tuple[list[Tracklet], list[Tracklet], list[Tracklet]]:
    """(train, query, gallery) tracklets as described in the module docstring (fixed by ``seed``)."""
    with np.load(path) as npz:
        images, labels = npz["images"], npz["labels"]
    rng = np.random.default_rng(seed)
    people = rng.permutation(np.unique(labels))[:n_people]
    train_people, test_people = people[: n_people // 2], people[n_people // 2:]

    def tracklet(person: int, photos: np.ndarray, camera: int) -> Tracklet:
        return Tracklet(int(person), camera, [camera_style(images[i], camera, rng) for i in photos])

    train, query, gallery = [], [], []
    for person in train_people:
        photos = np.flatnonzero(labels == person)
        first, second = photos[:5], photos[5:]
        train += [tracklet(person, first, 0), tracklet(person, second, 1),
                  tracklet(person, second, 0), tracklet(person, first, 1)]
    for person in test_people:
        photos = np.flatnonzero(labels == person)
        query.append(tracklet(person, photos[:5], 0))
        gallery.append(tracklet(person, photos[5:], 1))
    gallery += query  # same-camera copies of every query (must be excluded) + same-style distractors
    return train, query, gallery


_CACHE: dict[int, tuple[list[Tracklet], list[Tracklet], list[Tracklet]]] = {}


def olivetti_tracklet_dataset(
    split: str, transform: Any = None, n_people: int = 40, seq_len: int = 4, height: int = 48, width: int = 48,
    hflip: float = 0.5, pad: int = 3,
) -> TrackletDataset:
    """The loader registered as ``olivetti_tracklets`` (loader contract of the dataset registry)."""
    if n_people not in _CACHE:
        _CACHE[n_people] = olivetti_tracklets(n_people=n_people)
    train, query, gallery = _CACHE[n_people]
    return tracklet_split_dataset(split, train=train, query=query, gallery=gallery, transform=transform,
                                  seq_len=seq_len, height=height, width=width, hflip=hflip, pad=pad)


#: --no-validation: the earlier protocol, as a diagnostic (all 20 training people train, the last
#: step is reported, no checkpoint is selected; test is evaluated at step 0 and at the end only)
NO_VALIDATION = ["data.val_fraction=0", "eval.split=test", "eval.checkpoint=last", "trainer.eval_every=0"]


def run_one(mode: str, seed: int, steps: int, quick: bool, out: Path, threads: int,
            validation: bool = True) -> dict[str, Any]:
    """Train one (temporal pooling, seed) with fit; returns its metrics.json content plus seconds."""
    from deepmetric.config import load_config
    from deepmetric.data.registry import DATASETS
    from deepmetric.training import fit

    torch.set_num_threads(threads)
    DATASETS.register(DATASET_NAME, olivetti_tracklet_dataset)
    overrides = [f"seed={seed}", f"model.params.temporal={mode}", f"trainer.steps={steps}"]
    if quick:
        overrides += ["data.params.n_people=12", "sampler.p=4", "trainer.eval_every=3", "trainer.log_every=3",
                      "eval.k_values=[1,5]"]
    if not validation:
        overrides += NO_VALIDATION
    config = load_config(BASE, overrides)
    run_dir = out / f"{mode}_seed{seed}"
    start = time.time()
    metrics = fit(config, run_dir, progress=False, report=False)
    metrics["seconds"] = time.time() - start
    return metrics


def mean_std(values: list[float]) -> str:
    arr = 100 * np.asarray(values)
    return f"{arr.mean():.1f} +- {arr.std(ddof=1) if len(arr) > 1 else 0.0:.1f}"


def stage_metrics(run: dict[str, Any], stage: str) -> dict[str, float]:
    """Test metrics of ``stage``: baseline (untrained), selected (best on validation), last."""
    if stage == "baseline":
        return run["baseline"]["metrics"]
    if stage == "last":
        return run.get("test_last") or run["test"]  # test_last exists only when best != last
    return run["test"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="12 people, 1 seed, 3 steps (smoke run)")
    parser.add_argument("--steps", type=int, default=None, help="training steps per run (default 40)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--modes", nargs="+", default=["mean", "attention"])
    parser.add_argument("--jobs", type=int, default=1, help="runs trained in parallel processes (one thread each)")
    parser.add_argument("--json", type=Path, default=None, help="write every run's metrics here")
    parser.add_argument("--out", type=Path, default=None, help="keep the run folders here (default: temporary)")
    parser.add_argument("--no-validation", action="store_true",
                        help="diagnostic: the earlier protocol (no validation people, last step, no selection)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads per run (1 is fastest on a shared, oversubscribed machine)")
    args = parser.parse_args(argv)
    if not DATA.is_file():
        print(f"skipped: {DATA} not found (the shared Olivetti data is needed)")
        return 0
    seeds = args.seeds[:1] if args.quick else args.seeds
    steps = args.steps if args.steps is not None else (3 if args.quick else BASE["trainer"]["steps"])
    train, query, gallery = olivetti_tracklets(n_people=12 if args.quick else 40)
    held_out = "no validation: the earlier protocol" if args.no_validation else "20 % of the people held out for validation"
    print(f"train {len(train)} tracklets ({held_out}), query {len(query)}, "
          f"gallery {len(gallery)}; {steps} steps; seeds {seeds}; {args.jobs} job(s)", flush=True)
    jobs = [(mode, seed) for mode in args.modes for seed in seeds]
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out if args.out is not None else Path(tmp)
        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {job: pool.submit(run_one, *job, steps, args.quick, out, args.threads, not args.no_validation)
                       for job in jobs}
            results = {}
            for (mode, seed), future in futures.items():
                r = future.result()
                results[(mode, seed)] = r
                base, best, last = (stage_metrics(r, s) for s in ("baseline", "selected", "last"))
                print(f"{mode:9s} seed {seed}: untrained mAP {100 * base['map']:.1f}; chosen step "
                      f"{r['test_step']}: CMC-1 {100 * best['cmc@1']:.1f} mAP {100 * best['map']:.1f}; last step: "
                      f"CMC-1 {100 * last['cmc@1']:.1f} mAP {100 * last['map']:.1f} ({r['seconds']:.0f} s)", flush=True)
    rows = ["| model | temporal pooling | CMC-1 (%) | CMC-5 (%) | mAP (%) |", "|---|---|---|---|---|"]
    stages: tuple[tuple[str, str], ...] = (("untrained (ImageNet backbone, random head)", "baseline"),
                                           ("trained, checkpoint chosen on validation", "selected"),
                                           ("trained, last step", "last"))
    if args.no_validation:
        stages = (stages[0], stages[2])
    for label, stage in stages:
        for mode in args.modes:
            ms = [stage_metrics(results[(mode, s)], stage) for s in seeds]
            rows.append(f"| {label} | {mode} | {mean_std([m['cmc@1'] for m in ms])} | "
                        f"{mean_std([m['cmc@5'] for m in ms])} | {mean_std([m['map'] for m in ms])} |")
    print("\n".join(rows))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({f"{m}_seed{s}": r for (m, s), r in results.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
