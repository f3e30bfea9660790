"""Fixtures of the CLI/report tests: a fake run folder built from scratch (no training)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def make_fake_run(root: Path, n_classes: int = 6, per_class: int = 5, dim: int = 8, classification: bool = False) -> Path:
    """A run folder with every file the trainer writes, filled with synthetic values; the test
    embeddings point at real PNG files (one drawn square per class) plus one missing file."""
    run = root / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("seed: 0\neval:\n  metric: cosine\n", encoding="utf-8")
    with (run / "log.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["step", "epoch", "loss", "lr", "seconds"])
        for s in range(10, 210, 10):
            w.writerow([s, s // 50, 1.0 / s**0.5, 1e-3, s * 0.1])
    val = [{"step": s, "split": "val", "metrics": {"recall@1": 0.2 + s / 400, "map@r": 0.1 + s / 800}} for s in (0, 100, 200)]
    test = {"recall@1": 0.8, "recall@2": 0.85, "recall@4": 0.9, "recall@8": 0.95, "map@r": 0.5, "nmi": 0.7}
    metrics = {
        "selection_split": "val", "steps": 200, "total_steps": 200, "stopped_early": False, "test_step": 200,
        "evaluations": val,
        "baseline": {"step": 0, "split": "test", "metrics": {"recall@1": 0.3, "recall@2": 0.4, "recall@4": 0.5, "recall@8": 0.6, "map@r": 0.1, "nmi": 0.4}},
        "best": {"step": 200, "metric": "map@r", "value": 0.35},
        "test": test,
    }
    (run / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    if classification:
        np.savez(run / "test_predictions.npz", labels=np.array([0, 0, 0, 0, 1, 1, 1, 1]),
                 predictions=np.array([0, 0, 0, 1, 1, 1, 1, 1]), class_names=np.array(["cat", "dog"]))
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(n_classes), per_class)
    emb = rng.normal(size=(n_classes, dim))[labels] + 0.1 * rng.normal(size=(len(labels), dim))
    img_dir = root / "images"
    img_dir.mkdir()
    paths = []
    for i, y in enumerate(labels):
        p = img_dir / f"{i}.png"
        arr = np.full((20, 20, 3), 255, np.uint8)
        arr[3 * int(y) % 14 : 3 * int(y) % 14 + 6, 2:18] = 0
        Image.fromarray(arr).save(p)
        paths.append(str(p))
    paths[-1] = str(img_dir / "missing.png")  # unreadable: drawn as a placeholder
    np.savez(run / "test_embeddings.npz", embeddings=emb.astype(np.float32), labels=labels, paths=np.asarray(paths))
    return run


@pytest.fixture
def fake_run(tmp_path: Path) -> Path:
    return make_fake_run(tmp_path)


@pytest.fixture
def make_run():
    """The :func:`make_fake_run` factory, for tests that need options."""
    return make_fake_run
