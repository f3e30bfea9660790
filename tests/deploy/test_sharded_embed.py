"""Sharded embedding (deepmetric.deploy.sharded_embed): 2 processes equal 1 process bit for bit,
kill-and-resume at chunk granularity gives the same shards, the manifest guards the folder.

References: the one-process run of the same command (for the 2-process run) and an uninterrupted
run of the same plan (for the resumed one); equality is exact (``np.array_equal``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deepmetric.cli import main
from deepmetric.deploy.sharded_embed import (
    EmbedPlan,
    ModelRef,
    check_output,
    chunk_ranges,
    embed_shard,
    finalize,
    inputs_sha256,
    load_shards,
    shard_ranges,
    write_plan,
)
from deepmetric.errors import DataError


def make_tiny_run(root: Path, seed: int = 0) -> Path:
    """A run folder (config.yaml + checkpoints/best.pt) of an untrained 16 px test_resnet, no training."""
    from deepmetric.config import load_config, save_config
    from deepmetric.training.builders import build_loss_from_config, build_model, embedding_dim_of
    from deepmetric.training.checkpoint import save_checkpoint

    config = load_config({"seed": seed, "data": {"name": "omniglot", "image_size": 16, "num_workers": 0},
                          "model": {"backbone": "test_resnet", "pretrained": False, "embedding_dim": 8, "in_chans": 3},
                          "loss": {"name": "contrastive"}})
    torch.manual_seed(seed)
    model = build_model(config)
    loss = build_loss_from_config(config.loss, 2, embedding_dim_of(model))
    run = root / f"run{seed}"
    (run / "checkpoints").mkdir(parents=True)
    save_config(config, run / "config.yaml")
    save_checkpoint({"model": model.state_dict(), "loss": loss.state_dict(), "num_classes": 2}, run / "checkpoints" / "best.pt")
    return run


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(run A, run B with other weights, image folder: 3 classes x 9 random 12 px PNGs = 27 items)."""
    root = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    images = root / "images"
    for c in range(3):
        (images / f"class{c}").mkdir(parents=True)
        for i in range(9):
            Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(images / f"class{c}" / f"{i}.png")
    return make_tiny_run(root, 0), make_tiny_run(root, 1), images


def _embed_args(run: Path, images: Path, out: Path, *extra: str) -> list[str]:
    return ["embed", str(run), str(images), "-o", str(out), "--batch-size", "4", "--chunk-size", "8", "--threads", "1",
            "--no-progress", "--device", "cpu", *extra]


def test_ranges_are_contiguous_batch_aligned_and_cover_every_item() -> None:
    for n, world, batch in [(27, 2, 4), (100, 3, 8), (5, 4, 4), (1, 1, 1), (10_000, 7, 64)]:
        ranges = shard_ranges(n, world, batch)
        assert ranges[0][0] == 0 and ranges[-1][1] == n and len(ranges) == world
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
        assert all(start % batch == 0 for start, _ in ranges)
    assert shard_ranges(27, 2, 4) == [(0, 12), (12, 27)]  # 7 batches: 3 + 4
    assert shard_ranges(5, 4, 4) == [(0, 0), (0, 4), (4, 4), (4, 5)]  # 2 batches for 4 ranks: two empty shards
    assert chunk_ranges(12, 27, 8) == [(12, 20), (20, 27)]


@pytest.mark.slow
def test_two_processes_equal_one_process_exactly(tiny: tuple[Path, Path, Path], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    run, _, images = tiny
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(_embed_args(run, images, one)) == 0
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-m", "deepmetric.cli", *_embed_args(run, images, two, "--nproc", "2")],
                            capture_output=True, text=True, env=env, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "27 embeddings of dimension 8 (float32) in 2 shard(s)" in result.stdout
    a, b = load_shards(one, verify=True), load_shards(two, verify=True)
    assert [(s.start, s.stop) for s in b.shards] == [(0, 12), (12, 27)]
    sa, sb = a.to_embedding_set(), b.to_embedding_set()
    assert np.array_equal(sa.embeddings, sb.embeddings)  # bit-identical
    assert sa.labels.tolist() == sb.labels.tolist() and sa.paths == sb.paths == sorted(sa.paths)
    for view in b.shards:
        np.testing.assert_array_equal(view.arrays()["indices"], np.arange(view.start, view.stop))
    manifest = json.loads((two / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["items"] == 27 and manifest["world_size"] == 2
    assert manifest["model"]["checkpoint"] == "best" and len(manifest["model"]["sha256"]) == 64
    assert not (two / "parts").exists()

    # the single-file mode embeds the same items (in its own order and batches): same values up to round-off
    single = tmp_path / "single.npz"
    assert main(["embed", str(run), str(images), "-o", str(single), "--threads", "1", "--no-progress", "--device", "cpu"]) == 0
    data = np.load(single)
    order = np.argsort(data["paths"])
    np.testing.assert_allclose(data["embeddings"][order], sa.embeddings, atol=1e-5)


def test_manifest_guards_the_folder(tiny: tuple[Path, Path, Path], tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    run_a, run_b, images = tiny
    out = tmp_path / "shards"
    assert main(_embed_args(run_a, images, out, "--dtype", "float16")) == 0
    before = (out / "manifest.json").read_text()
    capsys.readouterr()

    def one_line_error(args: list[str], *needles: str) -> None:
        assert main(args) == 1
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        for needle in needles:
            assert needle in err, err

    one_line_error(_embed_args(run_a, images, out, "--dtype", "float16"), "already holds embeddings", "--resume")
    one_line_error(_embed_args(run_b, images, out, "--dtype", "float16", "--resume"), "the model", "run1")
    one_line_error(_embed_args(run_a, images / "class0", out, "--dtype", "float16", "--resume"), "the inputs", "27 items")
    one_line_error(_embed_args(run_a, images, out, "--resume"), "dtype", "--dtype float16")
    one_line_error(_embed_args(run_a, images, tmp_path / "x.npz", "--resume"), "folder of shards")
    assert main(_embed_args(run_a, images, out, "--dtype", "float16", "--resume")) == 0  # finished: nothing to do
    assert (out / "manifest.json").read_text() == before
    shards = load_shards(out)
    assert shards.dtype == "float16" and shards.shards[0].arrays()["embeddings"].dtype == np.float16
    assert isinstance(shards.shards[0].arrays()["embeddings"], np.memmap)
    (out / "shard-0-of-1.npz").write_bytes(b"damaged")
    with pytest.raises(DataError, match="does not match its size"):
        load_shards(out)


def _toy_plan(out: Path, world: int, n: int = 45, batch: int = 3, chunk: int = 6) -> tuple[EmbedPlan, list[str], list[str]]:
    paths = [f"item{i:03d}.png" for i in range(n)]
    labels = [f"c{i % 4}" for i in range(n)]
    model = ModelRef(run="toy", checkpoint="best", sha256="0" * 64)
    return EmbedPlan.create(out, n, world, batch, chunk, "float32", model, inputs_sha256(paths, labels)), paths, labels


class ToyModel:
    """A seeded MLP over fixed random inputs; counts the items it embeds. Batches follow the
    global grid (from ``start`` in steps of ``batch``), like the image embedder."""

    def __init__(self, n: int, batch: int) -> None:
        gen = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 6, generator=gen)
        self.net = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 5))
        self.batch = batch
        self.embedded: list[tuple[int, int]] = []

    def __call__(self, start: int, stop: int) -> np.ndarray:
        self.embedded.append((start, stop))
        with torch.no_grad():
            out = [self.net(self.x[s:min(stop, s + self.batch)]) for s in range(start, stop, self.batch)]
        return torch.cat(out).numpy()


def _run_all(plan: EmbedPlan, model: ToyModel, paths: list[str], labels: list[str]) -> None:
    check_output(plan, resume=False)
    write_plan(plan)
    for rank in range(plan.world_size):
        embed_shard(plan, rank, model, paths, labels)
    finalize(plan)


def test_kill_and_resume_at_chunk_granularity(tmp_path: Path) -> None:
    torch.manual_seed(0)
    reference_plan, paths, labels = _toy_plan(tmp_path / "ref", world=1)
    model = ToyModel(45, batch=3)
    _run_all(reference_plan, model, paths, labels)
    reference = load_shards(tmp_path / "ref").to_embedding_set()

    plan, _, _ = _toy_plan(tmp_path / "resumed", world=2)  # ranks: items 0-21 and 21-45, chunks of 6
    assert plan.chunks(0) == [(0, 6), (6, 12), (12, 18), (18, 21)]
    check_output(plan, resume=False)
    write_plan(plan)

    class Killed(Exception):
        pass

    def kill_after(n_chunks: int):
        seen = []

        def hook(start: int, stop: int) -> None:
            seen.append(start)
            if len(seen) == n_chunks:
                raise Killed
        return hook

    with pytest.raises(Killed):  # rank 0 killed after its 2nd chunk was written
        embed_shard(plan, 0, model, paths, labels, on_chunk=kill_after(2))
    with pytest.raises(Killed):  # rank 1 killed after its last chunk, before its shard file
        embed_shard(plan, 1, model, paths, labels, on_chunk=kill_after(4))
    parts = sorted(p.name for p in (plan.out_dir / "parts").iterdir())
    assert len(parts) == 6 and not (plan.out_dir / "shard-0-of-2.npz").exists()
    (plan.out_dir / "parts" / "items-000000000039-000000000045.npz").unlink()  # killed while writing the last chunk:
    stale = plan.out_dir / "parts" / ".items-000000000039-000000000045.npz.x1y2.tmp"  # its temporary file is left
    stale.write_bytes(b"half a chunk")

    model.embedded.clear()
    assert check_output(plan, resume=True) is not None
    embed_shard(plan, 0, model, paths, labels)
    embed_shard(plan, 1, model, paths, labels)
    assert model.embedded == [(12, 18), (18, 21), (39, 45)]  # only the missing chunks
    assert not stale.exists()
    finalize(plan)
    resumed = load_shards(plan.out_dir, verify=True).to_embedding_set()
    assert np.array_equal(resumed.embeddings, reference.embeddings)
    assert resumed.paths == reference.paths and resumed.labels.tolist() == reference.labels.tolist()

    model.embedded.clear()
    embed_shard(plan, 0, model, paths, labels)  # a finished shard is verified and skipped
    assert model.embedded == []


def test_chunk_of_another_plan_is_not_reused_and_nan_names_the_item(tmp_path: Path) -> None:
    plan, paths, labels = _toy_plan(tmp_path / "s", world=1)
    check_output(plan, resume=False)
    write_plan(plan)
    model = ToyModel(45, batch=3)

    def poisoned(start: int, stop: int) -> np.ndarray:
        out = model(start, stop)
        if start <= 20 < stop:
            out[20 - start, 1] = np.nan
        return out

    with pytest.raises(DataError, match=r"'item020.png' \(item 20\) holds NaN"):
        embed_shard(plan, 0, poisoned, paths, labels)
    other = EmbedPlan.create(plan.out_dir, 45, 1, 3, 6, "float16", plan.model, plan.inputs_sha256)
    model.embedded.clear()
    with pytest.raises(DataError):
        check_output(other, resume=True)  # dtype differs from the manifest
    embed_shard(plan, 0, model, paths, labels)
    assert model.embedded == [(18, 24), (24, 30), (30, 36), (36, 42), (42, 45)]  # chunks before the NaN were kept
