"""Video re-ID pipeline: config, loss wiring, all-frame embedding, same-camera exclusion, end to end."""

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from deepmetric.data.tracklets import Tracklet, TrackletDataset
from deepmetric.errors import ConfigError
from deepmetric.experiments.video_reid import (
    ReIDEvalConfig,
    ReIDSplits,
    VideoReIDModel,
    embed_tracklets,
    evaluate_tracklets,
    load_reid_config,
    main,
    run_video_reid,
    video_reid_loss,
)

REPO = Path(__file__).resolve().parents[2]
TINY = [
    "model.backbone=test_efficientnet", "model.pretrained=false", "model.embedding_dim=8",
    "model.freeze_bn=false", "data.height=16", "data.width=8", "data.seq_len=2", "data.pad=1",
    "sampler.p=2", "sampler.k=2", "scheduler.warmup_steps=1", "train.steps=3", "train.log_every=1",
    "device=cpu",
]


class TinyFrames(torch.nn.Module):
    """A frame model whose output depends on each image (mean colour -> linear -> unit norm)."""

    def __init__(self, dim: int = 4) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.proj = torch.nn.Linear(3, dim)
        self.embedding_dim = dim

    def forward(self, images):
        return F.normalize(self.proj(images.mean(dim=(2, 3))), dim=1)


def person_frames(person: int, n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    base = np.array([(37 * person) % 256, (91 * person) % 256, (53 * person) % 256], dtype=float)
    return [np.clip(base + rng.normal(0, 8, (8, 4, 3)), 0, 255).astype(np.uint8) for _ in range(n)]


def to_tensor(img):
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)


# ------------------------------------------------------------------ config


def test_unknown_key_names_the_closest_one():
    with pytest.raises(ConfigError, match=r"'train\.stepz'.*'train\.steps'"):
        load_reid_config({"train": {"stepz": 3}})
    with pytest.raises(ConfigError, match=r"'optimizer\.lr'"):
        load_reid_config({"lr": 0.1})
    with pytest.raises(ConfigError, match=r"model\.temporal"):
        load_reid_config(None, ["model.temporal=max"])


@pytest.mark.parametrize("name", ["reid_mars", "reid_prid2011", "reid_ilidsvid"])
def test_recipes_load_and_describe_themselves(name):
    path = REPO / "recipes" / f"{name}.yaml"
    assert path.read_text().startswith("# ")
    config = load_reid_config(path)
    assert config.frame_loss.name == "osm_caa" and config.tracklet_loss.name == "osm_caa"
    assert config.model.temporal == "attention"


# ------------------------------------------------------------------ loss wiring


def test_frame_loss_sees_labels_repeated_per_frame():
    seen = {}

    def frame_loss(emb, labels):
        seen["frame"] = (emb.clone(), labels.clone())
        return emb.sum() * 0 + 2.0

    def tracklet_loss(emb, labels):
        seen["tracklet"] = labels.clone()
        return emb.sum() * 0 + 3.0

    b, t, d = 3, 4, 5
    frames = torch.randn(b, t, d)
    labels = torch.tensor([7, 1, 7])
    total, parts = video_reid_loss(frames.mean(1), frames, labels, frame_loss, tracklet_loss, 0.5, 2.0)
    emb, frame_labels = seen["frame"]
    for b_i in range(b):  # independent loop: row b*T + t is frame t of tracklet b, labelled y_b
        for t_i in range(t):
            assert torch.equal(emb[b_i * t + t_i], frames[b_i, t_i])
            assert frame_labels[b_i * t + t_i] == labels[b_i]
    assert torch.equal(seen["tracklet"], labels)
    assert math.isclose(float(total), 0.5 * 2.0 + 2.0 * 3.0)
    assert parts == {"frame_loss": 2.0, "tracklet_loss": 3.0}
    total, parts = video_reid_loss(frames.mean(1), frames, labels, None, tracklet_loss)
    assert math.isclose(float(total), 3.0) and "frame_loss" not in parts


# ------------------------------------------------------------------ embedding with all frames


@pytest.mark.parametrize("mode", ["mean", "attention"])
def test_tracklet_embedding_pools_every_frame_once(mode):
    model = VideoReIDModel(TinyFrames(), 4, mode=mode)
    if mode == "attention":
        torch.nn.init.normal_(model.pool.quality.weight, std=3.0)
    tracklets = [Tracklet(1, 0, person_frames(1, 5, 0)), Tracklet(2, 1, person_frames(2, 3, 1))]
    data = TrackletDataset(tracklets, to_tensor, seq_len=2, mode="test")  # 5 frames -> 3 chunks, 1 padded
    got = embed_tracklets(model, data, batch_size=2)
    for i, tr in enumerate(tracklets):  # explicit reference: every real frame exactly once
        f = torch.stack([model.frame_model(to_tensor(x)[None])[0] for x in tr.frames]).detach()
        if mode == "mean":
            pooled = f.mean(0)
        else:
            scores = torch.stack([model.pool.quality(row).squeeze() for row in f]).detach()
            w = torch.exp(scores - scores.max())
            pooled = (w[:, None] * f).sum(0) / w.sum()
        torch.testing.assert_close(got[i], F.normalize(pooled, dim=0), atol=1e-5, rtol=1e-5)
    # padding frames must not count: the 5-frame tracklet differs from its 6-frame padded version
    padded = Tracklet(1, 0, tracklets[0].frames + [tracklets[0].frames[-1]])
    other = embed_tracklets(model, TrackletDataset([padded], to_tensor, seq_len=2, mode="test"))
    assert not torch.allclose(other[0], got[0], atol=1e-6)


# ------------------------------------------------------------------ same-camera exclusion


def test_same_camera_copies_of_the_query_never_count():
    model = VideoReIDModel(TinyFrames(), 4, mode="mean")
    people = range(1, 6)
    cam0 = [Tracklet(p, 0, person_frames(p, 3, p)) for p in people]
    cam1 = [Tracklet(p, 1, person_frames(p, 3, 100 + p)) for p in people[:4]]  # person 5 only in cam 0
    ds = lambda ts: TrackletDataset(ts, to_tensor, seq_len=2, mode="test")  # noqa: E731
    cfg = ReIDEvalConfig(ranks=[1, 2], batch_size=4)
    # the gallery holds exact copies of every query (same person, same camera, distance 0)
    with_copies = evaluate_tracklets(model, ds(cam0), ds(cam1 + cam0), cfg)["plain"]
    without = evaluate_tracklets(model, ds(cam0), ds(cam1 + cam0[:0]), cfg)["plain"]
    # person 5's only same-identity gallery item is its own camera-0 copy: no valid match
    assert with_copies["n_queries_without_match"] == 1 and with_copies["n_queries"] == 4
    # explicit reference: rank of the cam-1 match among other-person items (any camera)
    q = embed_tracklets(model, ds(cam0))
    g_items = cam1 + cam0
    g = embed_tracklets(model, ds(g_items))
    hits1, aps = 0, []
    for i, tq in enumerate(cam0[:4]):
        d = torch.cdist(q[i:i + 1], g)[0]
        valid = [j for j, tg in enumerate(g_items) if not (tg.person == tq.person and tg.camera == tq.camera)]
        ranked = sorted(valid, key=lambda j: (float(d[j]), j))
        pos = [r for r, j in enumerate(ranked) if g_items[j].person == tq.person]
        hits1 += pos[0] == 0
        aps.append(np.mean([(n + 1) / (r + 1) for n, r in enumerate(pos)]))
    assert math.isclose(with_copies["cmc@1"], hits1 / 4)
    assert math.isclose(with_copies["map"], float(np.mean(aps)), rel_tol=1e-9)
    assert without["n_queries"] == 4 and 0.0 <= without["cmc@1"] <= without["cmc@2"] <= 1.0


# ------------------------------------------------------------------ end to end


@pytest.fixture
def one_thread():
    """Tiny convolutions run much faster on one thread when the CI machine is oversubscribed."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_csv_dataset(root: Path) -> Path:
    rows = []
    for person in range(1, 7):
        for camera in (0, 1):
            for f, frame in enumerate(person_frames(person, 3, 10 * person + camera)):
                rel = f"p{person}/c{camera}_{f}.png"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(frame).save(root / rel)
                rows.append({"path": rel, "person": person, "camera": camera, "sequence": "s1"})
    manifest = root / "frames.csv"
    with manifest.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["path", "person", "camera", "sequence"])
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def test_end_to_end_cli_on_a_tiny_csv_tracklet_set(tmp_path, capsys, one_thread):
    manifest = write_csv_dataset(tmp_path / "data")
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(f"# tiny\ndata:\n  name: csv\n  root: {manifest}\neval:\n  rerank: true\n  k1: 4\n  k2: 2\n")
    assert main([str(recipe), *TINY, "--out", str(tmp_path / "run")]) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert len(results["train_log"]) == 3 and all(math.isfinite(r["loss"]) for r in results["train_log"])
    for stage in ("baseline", "trained"):
        for metrics in results[stage].values():
            assert all(0.0 <= metrics[k] <= 1.0 for k in ("cmc@1", "cmc@5", "cmc@10", "cmc@20", "map"))
            assert metrics["cmc@1"] <= metrics["cmc@5"] <= metrics["cmc@20"]
            assert metrics["n_queries"] == 3  # 6 people, half held out, query = camera 0
    assert "rerank" in results["trained"]
    assert "trained (plain)" in capsys.readouterr().out
    # a typo on the command line is a one-line error, exit code 2
    assert main([str(recipe), "train.stepz=1"]) == 2
    assert "train.steps" in capsys.readouterr().err


def test_run_is_seeded(one_thread):
    splits = ReIDSplits(
        train=[Tracklet(p, c, person_frames(p, 3, 10 * p + c)) for p in range(1, 5) for c in (0, 1)],
        query=[Tracklet(p, 0, person_frames(p, 3, p)) for p in range(5, 8)],
        gallery=[Tracklet(p, 1, person_frames(p, 3, 50 + p)) for p in range(5, 8)],
    )
    config = load_reid_config(
        None, [*TINY, "train.steps=2", "data.seq_len=1", "eval.baseline=false", "model.temporal=attention"]
    )
    a = run_video_reid(config, splits, log=None)
    b = run_video_reid(config, splits, log=None)
    assert a["train_log"] == b["train_log"] and a["trained"] == b["trained"]
