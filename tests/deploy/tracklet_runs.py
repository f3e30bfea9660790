"""A tiny tracklet (video re-ID) run folder for the deployment tests, written without training.

:func:`make_tracklet_run` writes the run the way :func:`deploy_runs.make_run` writes the image and
audio runs: the config resolved as ``deepmetric train`` resolves it (a ``tracklet_csv`` data
section with 16 x 8 frames, a ``test_efficientnet`` frame network, ``temporal`` pooling), the
model and loss from the trainer's builders, every weight and BatchNorm statistic moved away from
its initial value, and ``checkpoints/best.pt`` with the keys ``fit`` writes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from deepmetric.config import load_config, save_config
from deepmetric.models.contracts import trained_outputs
from deepmetric.training.builders import build_loss_from_config, build_model, embedding_dim_of
from deepmetric.training.checkpoint import save_checkpoint

from deploy_runs import NUM_CLASSES, _perturb

#: frame size of the run's data (data.params height x width)
HEIGHT, WIDTH = 16, 8
EMBEDDING_DIM = 8


def make_tracklet_run(root: Path, temporal: str = "attention", seed: int = 0) -> Path:
    """A run folder ``run-tracklet-<temporal>`` under ``root`` (``temporal``: mean | attention)."""
    data = {"name": "tracklet_csv", "root": str(root / "tracklets.csv"), "num_workers": 0,
            "params": {"seq_len": 3, "height": HEIGHT, "width": WIDTH}}
    model_section = {"name": "tracklet", "backbone": "test_efficientnet", "pretrained": False,
                     "embedding_dim": EMBEDDING_DIM, "params": {"temporal": temporal}}
    config = load_config({"seed": seed, "data": data, "model": model_section, "loss": {"name": "multi_similarity"}})
    torch.manual_seed(seed)
    model = build_model(config)
    _perturb(model, seed)
    loss = build_loss_from_config(config.loss, NUM_CLASSES, embedding_dim_of(model), outputs=trained_outputs(model))
    run = root / f"run-tracklet-{temporal}"
    save_config(config, run / "config.yaml")
    save_checkpoint({"step": 1, "num_classes": NUM_CLASSES, "model": model.state_dict(), "loss": loss.state_dict()},
                    run / "checkpoints" / "best.pt")
    return run


def make_clip(n_frames: int, seed: int) -> list[np.ndarray]:
    """``n_frames`` RGB frames of varying sizes (uint8 ``H x W x 3`` arrays), resized by the run's
    frame pipeline."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (20 + 3 * k, 9 + k, 3), dtype=np.uint8) for k in range(n_frames)]


def save_clip(frames: list[np.ndarray], folder: Path) -> list[Path]:
    """``frames`` written as PNG files in ``folder`` (the first one grey, to exercise decoding)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, frame in enumerate(frames):
        image = Image.fromarray(frame)
        path = folder / f"{k:03d}.png"
        (image.convert("L") if k == 0 else image).save(path)
        paths.append(path)
    return paths
