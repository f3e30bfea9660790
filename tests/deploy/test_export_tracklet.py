"""Deployment of the video re-ID ``tracklet`` model: ``deepmetric export`` in every format and
``deepmetric.load(run).embed(clips)``.

References are computed without the deploy package: the model rebuilt by
``deepmetric.training.load_trained``, its frames prepared by the run's own evaluation dataset
(``tracklet_split_dataset`` in test mode and its collate ``pad_tracklets``), and each clip also
embedded alone from its real frames (no padding, no mask). The exported files are run by their own
runtimes on a padded batch (5 clips of 1 to 9 frames) that neither the export (1 clip of 4 frames)
nor its own checks (3 clips of 4, 7 and 1 frames) used.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor

import deepmetric
from deepmetric.cli import main
from deepmetric.data.reid_datasets import tracklet_split_dataset
from deepmetric.data.tracklets import Tracklet, pad_tracklets
from deepmetric.deploy import ExportManifest, export_run, manifest_path
from deepmetric.deploy.graph import TrackletGraph
from deepmetric.errors import InputError
from deepmetric.models.contracts import embedding_of
from deepmetric.training import load_trained

from deploy_runs import run_exported
from tracklet_runs import EMBEDDING_DIM, HEIGHT, WIDTH, make_clip, make_tracklet_run, save_clip

#: TorchScript itself is deprecated in this torch; the tests still check the files it writes
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.:FutureWarning")

FORMATS = {"onnx": ".onnx", "export": ".pt2", "torchscript": ".ts"}
#: frames of the clips of the reference batch (padded to 9)
LENGTHS = (9, 3, 1, 6, 2)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One tiny tracklet run per temporal pooling mode."""
    root = tmp_path_factory.mktemp("tracklet-runs")
    return {mode: make_tracklet_run(root, mode) for mode in ("attention", "mean")}


def _evaluation_batch(run: Path, clips: list[list[Any]]) -> tuple[Tensor, Tensor]:
    """``(clips, mask)`` of ``clips`` prepared and padded exactly as the run's evaluation does."""
    model, _, _ = load_trained(run, "best")
    tracklets = [Tracklet(person=i + 1, camera=i % 2, frames=list(c)) for i, c in enumerate(clips)]
    dataset = tracklet_split_dataset("test", query=tracklets[:1], gallery=tracklets[1:],
                                     transform=model.eval_transform(), height=HEIGHT, width=WIDTH)
    (padded, mask), _ = pad_tracklets([dataset[i] for i in range(len(dataset))])
    return padded, mask


def _model_embedding(run: Path, padded: Tensor, mask: Tensor) -> np.ndarray:
    """The model's own evaluation embedding of a padded batch."""
    model, _, _ = load_trained(run, "best")
    with torch.inference_mode():
        return embedding_of(model, model(padded, mask)).numpy()


def _alone(run: Path, padded: Tensor, mask: Tensor) -> np.ndarray:
    """Each clip embedded from its real frames alone: no padding, no mask."""
    model, _, _ = load_trained(run, "best")
    with torch.inference_mode():
        return np.concatenate([embedding_of(model, model(c[m][None])).numpy() for c, m in zip(padded, mask)])


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_export_of_a_tracklet_run_computes_the_model_embedding(runs: dict[str, Path], tmp_path: Path, fmt: str) -> None:
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    run = runs["attention"]
    out = tmp_path / f"model{FORMATS[fmt]}"
    manifest = export_run(run, out)
    padded, mask = _evaluation_batch(run, [make_clip(n, seed=n) for n in LENGTHS])
    assert padded.shape == (len(LENGTHS), max(LENGTHS), 3, HEIGHT, WIDTH) and mask.sum(1).tolist() == list(LENGTHS)
    # padded frames hold noise: the file must ignore them, not rely on their being zero
    noisy = torch.where(mask[:, :, None, None, None], padded, torch.randn(padded.shape))
    got = run_exported(fmt, out, (noisy, mask))
    want = _model_embedding(run, padded, mask)
    assert got.shape == want.shape == (len(LENGTHS), EMBEDDING_DIM)
    assert np.abs(got - want).max() <= 1e-4
    assert np.abs(got - _alone(run, padded, mask)).max() <= 1e-4
    # a batch of one single-frame clip (Market-1501's clips) and a different batch size
    one = padded[2:3, :1], mask[2:3, :1]
    assert np.abs(run_exported(fmt, out, one) - want[2:3]).max() <= 1e-4
    # the manifest says what the file takes
    saved = json.loads(manifest_path(out).read_text())
    assert ExportManifest.read(manifest_path(out)) == manifest
    assert saved["input_kind"] == "tracklet" and saved["model_name"] == "tracklet" and saved["audio"] is None
    assert saved["inputs"] == [
        {"name": "clips", "shape": ["batch", "frames", 3, HEIGHT, WIDTH], "dtype": "float32"},
        {"name": "mask", "shape": ["batch", "frames"], "dtype": "bool"},
    ]
    assert saved["outputs"] == [{"name": "embedding", "shape": ["batch", EMBEDDING_DIM], "dtype": "float32"}]
    frame = saved["image"]
    assert (frame["channels"], frame["height"], frame["width"]) == (3, HEIGHT, WIDTH)
    assert frame["resize_to"] == [HEIGHT, WIDTH] and frame["resize_shorter_side"] is None
    model, _, _ = load_trained(run, "best")
    assert frame["mean"] == pytest.approx(list(model.eval_transform().mean))
    assert saved["tracklet"]["mask_dtype"] == "bool" and saved["tracklet"]["min_frames"] == 1
    assert saved["normalize"] is True and saved["backbone"] == "test_efficientnet"
    verification = saved["verification"]
    assert verification["checked_batches"] == [1, 3] and verification["checked_frames"] == [4, 7, 1]
    assert verification["padding_checked"] is True and verification["max_abs_diff"] <= 1e-4


def test_static_batch_export_keeps_the_frame_count_dynamic(runs: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    run = runs["mean"]
    out = tmp_path / "model.onnx"
    manifest = export_run(run, out, static_batch=2)
    assert manifest.batch == 2
    assert [t.shape for t in manifest.inputs] == [[2, "frames", 3, HEIGHT, WIDTH], [2, "frames"]]
    padded, mask = _evaluation_batch(run, [make_clip(5, 1), make_clip(2, 2)])
    assert np.abs(run_exported("onnx", out, (padded, mask)) - _model_embedding(run, padded, mask)).max() <= 1e-4


def test_a_file_that_does_not_ignore_padding_is_refused(runs: dict[str, Path], tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The export's own padding check is independent of the graph: a graph that pools padded frames
    fails it with one line, and nothing is left behind."""
    pytest.importorskip("onnxruntime")

    def pools_everything(self: TrackletGraph, clips: Tensor, mask: Tensor) -> Tensor:
        return embedding_of(self.model, self.model(clips))

    monkeypatch.setattr(TrackletGraph, "forward", pools_everything)
    with pytest.raises(InputError) as info:
        export_run(runs["attention"], tmp_path / "model.onnx")
    assert "does not ignore padded frames" in str(info.value) and "\n" not in str(info.value)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("temporal", ["attention", "mean"])
def test_load_embeds_clips_like_the_evaluation(runs: dict[str, Path], tmp_path: Path, temporal: str) -> None:
    run = runs[temporal]
    clip_a = save_clip(make_clip(5, seed=10), tmp_path / "a")  # file paths (one grey PNG)
    clip_b = [Image.fromarray(f) for f in make_clip(2, seed=11)]  # PIL images
    clip_c = make_clip(1, seed=12)  # one uint8 array
    embedder = deepmetric.load(run, device="cpu")
    assert isinstance(embedder, torch.nn.Module) and embedder.input_kind == "tracklet"
    got = embedder.embed([clip_a, clip_b, clip_c])
    padded, mask = _evaluation_batch(run, [clip_a, clip_b, clip_c])
    want = _model_embedding(run, padded, mask)
    assert got.shape == (3, EMBEDDING_DIM) and got.dtype == np.float32
    assert np.abs(got - want).max() <= 1e-5
    assert np.abs(got - _alone(run, padded, mask)).max() <= 1e-5
    # batching does not matter, nor the order of a clip in the batch
    assert np.abs(embedder.embed([clip_a, clip_b, clip_c], batch_size=1) - got).max() <= 1e-5
    assert np.abs(embedder.embed([clip_c, clip_a])[1] - got[0]).max() <= 1e-5
    # preprocess pads to the longest clip and masks the padding; the Embedder takes (clips, mask)
    clips, batch_mask = embedder.preprocess([clip_a, clip_b])
    assert clips.shape == (2, 5, 3, HEIGHT, WIDTH) and batch_mask.tolist() == [[True] * 5, [True] * 2 + [False] * 3]
    assert torch.equal(clips, padded[:2]) and torch.equal(batch_mask, mask[:2])
    with torch.inference_mode():
        assert np.abs(embedder(clips, batch_mask).numpy() - got[:2]).max() <= 1e-5
        assert np.abs(embedder((clips, batch_mask.float())).numpy() - got[:2]).max() <= 1e-5
    # whole clips as one array / one tensor of frames
    stacked = np.stack([np.asarray(Image.fromarray(f).resize((9, 20))) for f in make_clip(3, seed=13)])
    from_array = embedder.embed([stacked, torch.from_numpy(stacked).permute(0, 3, 1, 2)])
    assert np.abs(from_array[0] - from_array[1]).max() <= 1e-5
    assert np.abs(from_array[0] - embedder.embed([list(stacked)])[0]).max() <= 1e-5


def test_bad_clips_are_one_line_errors(runs: dict[str, Path]) -> None:
    embedder = deepmetric.load(runs["attention"], device="cpu")
    clip = make_clip(2, seed=0)
    cases = {
        "item 0 is an empty clip": [[]],
        "item 1 is an empty clip": [clip, ()],
        "a tracklet model embeds clips": [clip[0]],  # a frame passed where a clip belongs
        "item 0 frame 1 is a builtins.int": [[clip[0], 3]],
        "item 0 frame 0 is a numpy array of dtype float64": [[clip[0].astype(float)]],
        "does not exist": [["/no/such/frame.png"]],
    }
    for expected, items in cases.items():
        for call in (embedder.embed, embedder.preprocess):
            with pytest.raises(InputError) as info:
                call(items)
            message = str(info.value)
            assert expected in message and "\n" not in message, message
    with pytest.raises(InputError, match="at least one item"):
        embedder.preprocess([])
    assert embedder.embed([]).shape == (0, EMBEDDING_DIM)


def test_cli_export_of_a_tracklet_run(runs: dict[str, Path], tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "model.pt2"
    assert main(["export", str(runs["mean"]), "-o", str(out), "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    assert "torch.export export of 'tracklet'" in printed and "clips [batch, frames, 3, 16, 8]" in printed
    assert "mask [batch, frames]" in printed and str(manifest_path(out)) in printed
