"""Video re-ID through the one trainer (``deepmetric.training.fit``): tracklet data, the
``tracklet`` model, frame + tracklet losses, padded all-frame evaluation, CMC / mAP, resume.

Tiny in-memory tracklets (a colour per person, noisy frames, 2-6 frames each) and a tiny timm
net (``test_efficientnet``, random init, 16 x 8 frames). Every check compares against an
independent reference written out with explicit loops.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from deepmetric.config import Config, load_config
from deepmetric.data.registry import DATASETS
from deepmetric.data.reid_datasets import tracklet_split_dataset
from deepmetric.data.tracklets import Tracklet, TrackletDataset
from deepmetric.models.contracts import trained_outputs
from deepmetric.training import fit
from deepmetric.training.builders import build_datasets, build_loss_from_config, build_model, build_sampler, embedding_dim_of
from deepmetric.training.checkpoint import load_checkpoint
from deepmetric.training.seed import derive_seed, seed_everything, seed_step
from deepmetric.training.views import SeededItems

FRAME_WEIGHT, TRACKLET_WEIGHT = 0.7, 1.3


def person_frames(person: int, n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    base = np.array([(37 * person) % 256, (91 * person) % 256, (53 * person) % 256], dtype=float)
    return [np.clip(base + rng.normal(0, 12, (8, 4, 3)), 0, 255).astype(np.uint8) for _ in range(n)]


def toy_tracklets() -> tuple[list[Tracklet], list[Tracklet], list[Tracklet]]:
    """(train, query, gallery): 6 training people with 3 tracklets over 2 cameras; 5 test people with a camera-0 query
    and a camera-1 gallery tracklet, plus same-camera copies of every query, a junk (-1) and a
    distractor (0) tracklet; lengths 2..6 frames."""
    train = [Tracklet(p, c, person_frames(p, 2 + (p + c + s) % 5, 10 * p + 3 * s + c))
             for p in range(1, 7) for c, s in ((0, 0), (1, 0), (0, 1))]
    query = [Tracklet(p, 0, person_frames(p, 2 + p % 4, 100 + p)) for p in range(10, 15)]
    gallery = [Tracklet(p, 1, person_frames(p, 3 + p % 3, 200 + p)) for p in range(10, 15)]
    gallery += [Tracklet(t.person, 0, list(t.frames)) for t in query]  # must be excluded by the camera rule
    gallery += [Tracklet(-1, 1, person_frames(11, 2, 300)), Tracklet(0, 1, person_frames(40, 4, 301))]
    return train, query, gallery


def toy_loader(split: str, transform: Any = None, seq_len: int = 3, height: int = 16, width: int = 8,
               hflip: float = 0.5, pad: int = 1) -> TrackletDataset:
    train, query, gallery = toy_tracklets()
    return tracklet_split_dataset(split, train=train, query=query, gallery=gallery, transform=transform,
                                  seq_len=seq_len, height=height, width=width, hflip=hflip, pad=pad)


@pytest.fixture(autouse=True)
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(DATASETS, "toy_tracklets", toy_loader)


def tiny_config(*overrides: str) -> Config:
    return load_config({
        "seed": 1,
        "device": "cpu",
        "data": {"name": "toy_tracklets", "params": {"seq_len": 3, "height": 16, "width": 8, "pad": 1},
                 "val_fraction": 0.34, "num_workers": 0},
        "sampler": {"p": 2, "k": 2},
        "model": {"name": "tracklet", "backbone": "test_efficientnet", "pretrained": False, "embedding_dim": 8,
                  "params": {"temporal": "attention"}},
        "loss": {"name": "osm_caa", "params": {"alpha": 1.2, "sigma": 0.8, "lam": 0.5, "ce_weight": 1.0},
                 "heads": {"frame": FRAME_WEIGHT, "tracklet": TRACKLET_WEIGHT}},
        "optimizer": {"name": "adamw", "lr": 0.001},
        "scheduler": {"name": "none", "warmup_steps": 0},
        "trainer": {"steps": 3, "eval_every": 3, "log_every": 1, "checkpoint_every": 1},
        "eval": {"protocol": "reid", "metric": "euclidean", "k_values": [1, 2], "batch_size": 3,
                 "checkpoint": "last", "rerank": True, "rerank_k1": 4, "rerank_k2": 2},
    }, list(overrides))


def test_training_loss_is_the_weighted_sum_of_frame_and_tracklet_losses(tmp_path: Path) -> None:
    config = tiny_config()
    fit(config, tmp_path / "run", progress=False, report=False)
    first_logged = float((tmp_path / "run" / "log.csv").read_text().splitlines()[1].split(",")[2])
    # rebuild what fit builds, in its order, and its first batch
    seed_everything(config.seed, config.deterministic)
    model = build_model(config)
    splits = build_datasets(config, model)
    loss = build_loss_from_config(config.loss, splits.num_classes, embedding_dim_of(model), trained_outputs(model))
    sampler = build_sampler(splits.train.labels, config.sampler, config.seed)
    sampler.set_epoch(0)
    batch = next(iter(sampler))
    items = SeededItems(splits.train)
    pairs = [items[(int(i), derive_seed(config.seed, "item", 0, 0, j))] for j, i in enumerate(batch)]
    clips = torch.stack([clip for clip, _ in pairs])
    labels = torch.tensor([label for _, label in pairs])
    seed_step(derive_seed(config.seed, "step", 0))
    model.train()
    loss.train()
    out = model(clips)
    b, t = clips.shape[:2]
    assert out["frame"].shape == (b, t, 8) and out["tracklet"].shape == (b, 8)
    rows, row_labels = [], []
    for i in range(b):  # explicit: every frame of clip i carries the clip's identity
        for k in range(t):
            rows.append(out["frame"][i, k])
            row_labels.append(int(labels[i]))
    frame_value = loss.losses["frame"](torch.stack(rows), torch.tensor(row_labels))
    tracklet_value = loss.losses["tracklet"](out["tracklet"], labels)
    expected = FRAME_WEIGHT * frame_value + TRACKLET_WEIGHT * tracklet_value
    torch.testing.assert_close(loss(out, labels), expected, atol=1e-6, rtol=1e-6)
    assert first_logged == pytest.approx(float(expected.detach()), abs=2e-6)
    assert frame_value.item() != pytest.approx(tracklet_value.item())  # two distinct losses were summed


def explicit_embedding(model: torch.nn.Module, frames: torch.Tensor) -> torch.Tensor:
    """One tracklet by hand: each frame alone through the frame network, softmax attention, unit norm."""
    f = torch.stack([model.frame_model(frames[k][None])[0] for k in range(frames.shape[0])])
    scores = torch.stack([model.pool.quality(row).squeeze() for row in f])
    w = torch.exp(scores - scores.max())
    return F.normalize((w[:, None] * f).sum(0) / w.sum(), dim=0)


def reference_reid(dist: np.ndarray, qi: list[int], gi: list[int], qc: list[int], gc: list[int], ranks: list[int]):
    cmc = {k: 0 for k in ranks}
    aps = []
    for q in range(dist.shape[0]):
        items = sorted(range(dist.shape[1]), key=lambda j: (dist[q, j], j))
        kept = [j for j in items if not (gi[j] == qi[q] and gc[j] == qc[q]) and gi[j] != -1]
        hits = [r for r, j in enumerate(kept, start=1) if gi[j] == qi[q]]
        if hits:
            for k in ranks:
                cmc[k] += hits[0] <= k
            aps.append(sum((n + 1) / r for n, r in enumerate(hits)) / len(hits))
    return {f"cmc@{k}": cmc[k] / len(aps) for k in ranks}, float(np.mean(aps))


def test_padded_evaluation_equals_one_tracklet_at_a_time_and_cmc_map_equal_the_reference(tmp_path: Path) -> None:
    config = tiny_config()
    result = fit(config, tmp_path / "run", progress=False, report=False)
    model = build_model(config)
    model.load_state_dict(load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["model"])
    model.eval()
    test = build_datasets(config, model).test
    lengths = [len(t.frames) for t in test.tracklets]
    assert len(set(lengths)) > 2  # variable lengths, mixed within the padded batches of 3
    saved = np.load(tmp_path / "run" / "test_embeddings.npz")
    with torch.no_grad():
        loop = torch.stack([explicit_embedding(model, test[i][0]) for i in range(len(test))])
    np.testing.assert_allclose(saved["embeddings"], loop.numpy(), atol=2e-5, rtol=0)
    # CMC and mAP of the run = the explicit reference on the one-by-one embeddings
    q = [i for i, flag in enumerate(test.is_query) if flag]
    g = [i for i, flag in enumerate(test.is_query) if not flag]
    dist = np.array([[float((loop[a] - loop[b]).norm()) for b in g] for a in q])
    cmc, m_ap = reference_reid(dist, [test.persons[i] for i in q], [test.persons[i] for i in g],
                               [test.cameras[i] for i in q], [test.cameras[i] for i in g], [1, 2])
    metrics = result["test"]
    assert metrics["cmc@1"] == pytest.approx(cmc["cmc@1"]) and metrics["cmc@2"] == pytest.approx(cmc["cmc@2"])
    assert metrics["map"] == pytest.approx(m_ap, abs=1e-6)
    assert {"rerank/cmc@1", "rerank/map", "map@r", "recall@1"} <= set(metrics)
    assert result["protocol"] == "reid" and {"cmc@1", "map"} <= set(result["baseline"]["metrics"])
    # the validation split (training identities) is retrieval only; the CMC curve is written
    assert all("cmc@1" not in e["metrics"] and "map@r" in e["metrics"] for e in result["evaluations"])
    assert (tmp_path / "run" / "cmc.csv").read_text().startswith("rank,cmc\n1,")
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]["map"] == metrics["map"]


def test_resume_is_exact_for_the_tracklet_model(tmp_path: Path) -> None:
    """N steps, then resumed to 2N steps == 2N steps straight (random clips and augmentation)."""
    straight = fit(tiny_config("trainer.steps=4", "trainer.eval_every=2"), tmp_path / "straight",
                   progress=False, report=False)
    fit(tiny_config("trainer.steps=2", "trainer.eval_every=2"), tmp_path / "resumed", progress=False, report=False)
    resumed = fit(tiny_config("trainer.steps=4", "trainer.eval_every=2"), tmp_path / "resumed", resume=True,
                  progress=False, report=False)
    one = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    two = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")
    assert one["step"] == two["step"] == 4
    for part in ("model", "loss"):
        assert one[part].keys() == two[part].keys()
        for key in one[part]:
            assert torch.equal(one[part][key], two[part][key]), f"{part}.{key}"
    assert straight["evaluations"] == resumed["evaluations"] and straight["test"] == resumed["test"]
    assert all(math.isfinite(v) for v in straight["test"].values() if isinstance(v, float))
