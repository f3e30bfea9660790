"""``deepmetric export``: every shipped model family in every format computes PyTorch's evaluation
embedding, the manifest describes it, and every bad input is a one-line error.

References: the exported files are run with their own runtimes (ONNX Runtime,
``torch.export.load(...).module()``, ``torch.jit.load``) and compared with the model rebuilt by
``deepmetric.training.load_trained`` and ``deepmetric.models.contracts.embedding_of`` -- not with
the deploy package's own graph -- on a batch size (5) and, for audio, a frame count (40) that
neither the export (1 item, 23 frames) nor its own check (3 items, 31 frames) used.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import deepmetric
from deepmetric.cli import main
from deepmetric.data.transforms import build_eval_transform
from deepmetric.deploy import ExportManifest, export_run, manifest_path
from deepmetric.errors import DataError, InputError
from deepmetric.models.contracts import embedding_of
from deepmetric.models.registry import MODELS
from deepmetric.training import load_trained

from deploy_runs import FAMILIES, IMAGE_SIZE, make_run, run_exported, run_factory, write_images  # noqa: F401  (fixture)

#: TorchScript itself is deprecated in this torch; the tests still check the files it writes
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.:FutureWarning")

FORMATS = {"onnx": ".onnx", "export": ".pt2", "torchscript": ".ts"}
BATCH, FRAMES = 5, 40


def _inputs(family: str) -> tuple[Tensor, ...]:
    gen = torch.Generator().manual_seed(7)
    if FAMILIES[family]["name"] == "audio_cnn":
        lengths = torch.tensor([FRAMES, 33, 12, 2, 27])
        features = torch.randn(BATCH, FRAMES, 40, generator=gen)
        for row, n in enumerate(lengths.tolist()):
            features[row, n:] = 0.0
        return features, lengths
    return (torch.randn(BATCH, 3, IMAGE_SIZE, IMAGE_SIZE, generator=gen),)


def _pytorch(run: Path, inputs: tuple[Tensor, ...]) -> np.ndarray:
    model, _, _ = load_trained(run, "best")
    with torch.inference_mode():
        return embedding_of(model, model(*inputs)).numpy()


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("family", list(FAMILIES))
def test_export_computes_the_pytorch_embedding(run_factory: Any, tmp_path: Path, family: str, fmt: str) -> None:
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    run = run_factory(family)
    out = tmp_path / f"model{FORMATS[fmt]}"
    manifest = export_run(run, out)
    inputs = _inputs(family)
    got, want = run_exported(fmt, out, inputs), _pytorch(run, inputs)
    assert got.shape == want.shape == (BATCH, 8 if family != "multilevel" else 16)
    assert np.abs(got - want).max() <= 1e-4
    # the manifest beside the file
    saved = json.loads(manifest_path(out).read_text())
    assert ExportManifest.read(manifest_path(out)) == manifest
    assert saved["format"] == fmt and saved["file"] == out.name and saved["batch"] == "dynamic"
    assert saved["model_name"] == FAMILIES[family]["name"]
    assert saved["deepmetric_version"] == deepmetric.__version__
    assert saved["embedding_dim"] == want.shape[1] and saved["normalize"] is True
    assert np.allclose(np.linalg.norm(want, axis=1), 1.0, atol=1e-5)
    assert saved["checkpoint"]["which"] == "best" and saved["checkpoint"]["step"] == 1
    assert Path(saved["checkpoint"]["path"]) == (run / "checkpoints" / "best.pt").resolve()
    assert saved["verification"]["checked_batches"] == [1, 3]
    if family == "audio":
        assert saved["input_kind"] == "audio_features" and saved["image"] is None
        assert saved["audio"]["sample_rate"] == 8000 and saved["audio"]["n_mels"] == 40  # FSDD's rate
        assert [(t["name"], t["shape"]) for t in saved["inputs"]] == [
            ("features", ["batch", "frames", 40]), ("lengths", ["batch"])]
    else:
        image = saved["image"]
        assert saved["input_kind"] == "image" and saved["audio"] is None
        assert (image["channels"], image["height"], image["width"]) == (3, IMAGE_SIZE, IMAGE_SIZE)
        assert image["interpolation"] == "bicubic" and image["center_crop"] == [IMAGE_SIZE, IMAGE_SIZE]
        model, _, _ = load_trained(run, "best")
        assert image["mean"] == pytest.approx(list(model.mean)) and image["std"] == pytest.approx(list(model.std))
        crop_pct = 0.875 if family != "resnet" else 0.95  # timm's configs of the two backbones
        assert image["resize_shorter_side"] == round(IMAGE_SIZE / crop_pct)
        assert saved["inputs"] == [{"name": "images", "shape": ["batch", 3, IMAGE_SIZE, IMAGE_SIZE], "dtype": "float32"}]
    assert saved["outputs"] == [{"name": "embedding", "shape": ["batch", want.shape[1]], "dtype": "float32"}]


def test_onnx_of_preprocessed_files_equals_embed(run_factory: Any, tmp_path: Path) -> None:
    """The deployment path end to end: the manifest's preprocessing + the ONNX file == Embedder.embed."""
    ort = pytest.importorskip("onnxruntime")
    run = run_factory("efficientnet")
    export_run(run, tmp_path / "m.onnx")
    files = write_images(tmp_path / "images", n=4)
    embedder = deepmetric.load(run, device="cpu")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": embedder.preprocess(files).numpy()})[0]
    assert np.abs(got - embedder.embed(files)).max() <= 1e-4


# ------------------------------------------------------------------------------------ errors


class FixedBatchNet(nn.Module):
    """Works at any batch size in PyTorch, but ``int(images.shape[0])`` bakes the traced batch
    into every exported graph."""

    input_size = (3, 8, 8)
    mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)

    def __init__(self, embedding_dim: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, embedding_dim, 3)
        self.embedding_dim = embedding_dim

    def forward(self, images: Tensor) -> Tensor:
        n = int(images.shape[0])
        return F.normalize(self.conv(images).reshape(n, self.embedding_dim, -1).mean(dim=2), dim=1)

    def eval_transform(self) -> Any:
        return build_eval_transform(self.input_size, self.mean, self.std)


class DataDependentNet(FixedBatchNet):
    """Scales by a Python float read from the data: no exporter can capture that."""

    def forward(self, images: Tensor) -> Tensor:
        return self.conv(images).mean(dim=(2, 3)) * float(images.std())


@pytest.fixture
def custom_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    def make(cls: type[nn.Module]) -> Path:
        monkeypatch.setitem(MODELS, cls.__name__, cls)
        return make_run(tmp_path, cls.__name__, model={"name": cls.__name__, "embedding_dim": 4})

    return make


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_a_batch_baked_into_the_graph_says_static_batch(custom_run: Any, tmp_path: Path, fmt: str) -> None:
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    run = custom_run(FixedBatchNet)
    out = tmp_path / f"fixed{FORMATS[fmt]}"
    with pytest.raises(InputError, match="cannot take a dynamic batch") as info:
        export_run(run, out)
    assert "export with --static-batch" in str(info.value) and "\n" not in str(info.value)
    assert not out.exists() and not manifest_path(out).exists()
    assert not list(tmp_path.glob(".*partial*"))  # nothing half-written is left
    manifest = export_run(run, out, static_batch=2)
    assert manifest.batch == 2 and manifest.inputs[0].shape == [2, 3, 8, 8]
    x = torch.randn(2, 3, 8, 8)
    assert np.abs(run_exported(fmt, out, (x,)) - _pytorch(run, (x,))).max() <= 1e-4


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_a_model_no_exporter_can_capture_is_one_line_naming_another_format(custom_run: Any, tmp_path: Path,
                                                                          fmt: str) -> None:
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    run = custom_run(DataDependentNet)
    with pytest.raises(InputError) as info:
        export_run(run, tmp_path / f"m{FORMATS[fmt]}")
    message = str(info.value)
    assert "\n" not in message and "DataDependentNet" in message
    assert {"onnx": "torch.export", "export": "ONNX", "torchscript": "ONNX"}[fmt] in message


def test_torch_export_of_the_recurrent_audio_model_names_onnx(tmp_path: Path) -> None:
    """pack_padded_sequence is beyond torch.export; the error says so and points to ONNX, which works."""
    model = {"name": "audio_cnn", "embedding_dim": 8, "params": {"n_mels": 40, "channels": [8], "recurrent": True,
                                                                 "rnn_hidden": 8}}
    run = make_run(tmp_path, "audio_rnn", model=model)
    with pytest.raises(InputError, match=r"torch.export cannot capture 'audio_cnn'.*try ONNX \(-o FILE.onnx\)"):
        export_run(run, tmp_path / "rnn.pt2")
    pytest.importorskip("onnxruntime")
    export_run(run, tmp_path / "rnn.onnx")
    inputs = (torch.randn(2, 9, 40), torch.tensor([9, 4]))
    inputs[0][1, 4:] = 0
    assert np.abs(run_exported("onnx", tmp_path / "rnn.onnx", inputs) - _pytorch(run, inputs)).max() <= 1e-4


def test_bad_inputs_are_one_line_errors(run_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    run = run_factory("efficientnet")
    empty = tmp_path / "empty-run"
    shutil.copytree(run, empty)
    shutil.rmtree(empty / "checkpoints")
    with pytest.raises(DataError, match="has no checkpoint"):
        export_run(empty, tmp_path / "m.onnx")
    with pytest.raises(InputError, match=r"suffix '\.bin'; name the file \.onnx, \.pt2 or \.ts, or pass --format"):
        export_run(run, tmp_path / "m.bin")
    with pytest.raises(InputError, match="unknown export format 'tflite'"):
        export_run(run, tmp_path / "m.onnx", format="tflite")
    with pytest.raises(DataError, match=r"no checkpoints/last\.pt"):
        export_run(run, tmp_path / "m.onnx", which="last")
    monkeypatch.setitem(__import__("sys").modules, "onnx", None)  # "not installed"
    with pytest.raises(InputError, match=r'pip install "deepmetric\[export\]"'):
        export_run(run, tmp_path / "m.onnx")
    # the command: exit status 1, one line naming the problem and the fix
    for argv in (["export", str(empty), "-o", str(tmp_path / "m.pt2")],
                 ["export", str(run), "-o", str(tmp_path / "m.bin")],
                 ["export", str(run), "-o", str(tmp_path / "m.onnx")]):
        capsys.readouterr()
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.startswith("deepmetric export: error: ") and err.count("\n") == 1, err
    assert not list(tmp_path.glob("m.*"))


def test_cli_export_with_format_override(run_factory: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = run_factory("efficientnet")
    out = tmp_path / "model.bin"
    assert main(["export", str(run), "-o", str(out), "--format", "ts", "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    assert "TorchScript export of 'embedder'" in printed and str(manifest_path(out)) in printed
    assert ExportManifest.read(manifest_path(out)).format == "torchscript"
    x = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert np.abs(run_exported("torchscript", out, (x,)) - _pytorch(run, (x,))).max() <= 1e-4

