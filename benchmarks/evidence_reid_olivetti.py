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

It trains :mod:`deepmetric.experiments.video_reid` (frame + tracklet OSM+CAA losses, AdamW,
offline ImageNet EfficientNet-Lite0, frames resized to 48 x 48, T = 4 of the 5 frames per clip)
with ``mean`` vs ``attention`` temporal
pooling, 3 seeds each, and prints CMC-1/5 and mAP (mean +- std over seeds) next to the
untrained network (pretrained backbone, random embedding head).

    python benchmarks/evidence_reid_olivetti.py [--quick] [--steps N] [--seeds 0 1 2] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from deepmetric.data.tracklets import Tracklet
from deepmetric.experiments.video_reid import ReIDSplits, load_reid_config, run_video_reid

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "olivetti" / "olivetti.npz"

BASE = {
    "device": "cpu",
    "data": {"seq_len": 4, "height": 48, "width": 48, "hflip": 0.5, "pad": 3},
    "sampler": {"p": 8, "k": 4},
    "model": {"backbone": "tf_efficientnet_lite0", "pretrained": "offline", "embedding_dim": 128, "freeze_bn": True},
    "frame_loss": {"name": "osm_caa", "params": {"alpha": 1.2, "sigma": 0.8, "lam": 0.5}},
    "tracklet_loss": {"name": "osm_caa", "params": {"alpha": 1.2, "sigma": 0.8, "lam": 0.5}},
    "optimizer": {"name": "adamw", "lr": 1e-3, "weight_decay": 1e-4, "backbone_lr_mult": 0.1},
    "scheduler": {"name": "cosine", "warmup_steps": 10},
    "train": {"steps": 40, "log_every": 20},
    "eval": {"metric": "euclidean", "ranks": [1, 5, 10], "baseline": True, "batch_size": 256},
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


def olivetti_tracklets(path: Path = DATA, n_people: int = 40, seed: int = 0) -> ReIDSplits:
    """The two-camera tracklet split described in the module docstring (fixed by ``seed``)."""
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
    return ReIDSplits(train, query, gallery)


def mean_std(values: list[float]) -> str:
    arr = 100 * np.asarray(values)
    return f"{arr.mean():.1f} +- {arr.std(ddof=1) if len(arr) > 1 else 0.0:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 people, 1 seed, 3 steps (smoke run)")
    parser.add_argument("--steps", type=int, default=None, help="training steps per run (default 40)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--modes", nargs="+", default=["mean", "attention"])
    parser.add_argument("--json", type=Path, default=None, help="write every run's results here")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1 is fastest on a shared, oversubscribed machine)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not DATA.is_file():
        print(f"skipped: {DATA} not found (the shared Olivetti data is needed)")
        return 0
    splits = olivetti_tracklets(n_people=10 if args.quick else 40)
    seeds = args.seeds[:1] if args.quick else args.seeds
    steps = args.steps if args.steps is not None else (3 if args.quick else BASE["train"]["steps"])
    overrides = ["sampler.p=4", "train.log_every=3"] if args.quick else []
    print(f"train {len(splits.train)} tracklets, query {len(splits.query)}, gallery {len(splits.gallery)}; "
          f"{steps} steps; seeds {seeds}", flush=True)
    runs: dict[str, list[dict]] = {m: [] for m in args.modes}
    for mode in args.modes:
        for seed in seeds:
            config = load_reid_config(
                BASE, [f"seed={seed}", f"model.temporal={mode}", f"train.steps={steps}", *overrides]
            )
            start = time.time()
            result = run_video_reid(config, splits, log=None)
            base, trained = result["baseline"]["plain"], result["trained"]["plain"]
            print(f"{mode:9s} seed {seed}: untrained mAP {100 * base['map']:.1f}, trained CMC-1 "
                  f"{100 * trained['cmc@1']:.1f} mAP {100 * trained['map']:.1f} ({time.time() - start:.0f} s)",
                  flush=True)
            runs[mode].append(result)
    rows = ["| model | temporal pooling | CMC-1 (%) | CMC-5 (%) | mAP (%) |", "|---|---|---|---|---|"]
    stages = (("untrained (ImageNet backbone, random head)", "baseline"),
              ("trained (frame + tracklet OSM+CAA)", "trained"))
    for label, stage in stages:
        for mode in args.modes:
            ms = [r[stage]["plain"] for r in runs[mode]]
            rows.append(f"| {label} | {mode} | {mean_std([m['cmc@1'] for m in ms])} | "
                        f"{mean_std([m['cmc@5'] for m in ms])} | {mean_std([m['map'] for m in ms])} |")
    print("\n".join(rows))
    if args.json is not None:
        args.json.write_text(json.dumps(runs, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
